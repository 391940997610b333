"""The mirror-tree check: a port keeps the reference's module tree and attribute names, so its
variable paths, mapped by the leaf rules (``weight_convert.rules.torch_key``), are the
reference's state-dict keys, in the same order. Framework-free.

Keras lists variables in the order layers are tracked and built, which is the reference's
definition order, so the keys must come in the same order. Flax NNX lists state sorted by the
port's attribute names at every level (list items by index), not in definition order, and its
leaf names differ from the reference's (``kernel`` for ``weight`` sorts before ``norm``): for
``flax`` the keys are compared as a set, and the port's paths must be in NNX's order.
"""

from __future__ import annotations

from collections.abc import Sequence

from weight_convert import rules

__all__ = ["mirror_differences", "nnx_order"]


def nnx_order(key: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a dotted path in NNX's state order: names sorted, list indices numerically."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in key.split("."))


def mirror_differences(
    reference_keys: Sequence[str], port_paths: Sequence[str], framework: str
) -> list[str]:
    """What keeps ``port_paths`` (a port model's variables, in its order) from mirroring
    ``reference_keys`` (the reference's ``state_dict()`` keys, in order): an empty list when the
    trees match. ``framework`` is the adapter's name ("flax", "keras-<backend>")."""
    want = list(reference_keys)
    got = [rules.torch_key(p) for p in port_paths]
    if framework == "flax":
        if list(port_paths) != sorted(port_paths, key=nnx_order):
            return ["the Flax paths are not in NNX's state order"]
        want, got = sorted(want), sorted(got)
        port_paths = sorted(port_paths, key=rules.torch_key)
    problems = []
    if len(got) != len(set(got)):
        problems.append("two port variables map to one reference key")
    missing = [k for k in want if k not in set(got)]
    extra = [p for p, k in zip(port_paths, got, strict=True) if k not in set(want)]
    if missing:
        problems.append(f"reference keys no port variable maps to: {missing[:5]}")
    if extra:
        problems.append(f"port variables outside the reference: {extra[:5]}")
    if not problems and got != want:
        i = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        problems.append(
            f"order differs from position {i}: port {port_paths[i]} ({got[i]}), reference {want[i]}"
        )
    return problems
