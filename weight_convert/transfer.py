"""Structural weight transfer: walk the target's variables by path, strict coverage both ways.

Framework-free: the frameworks appear only through ``weight_convert.frameworks`` adapters, which
list a model's variables as ``{dotted port path: handle}`` and read / assign numpy arrays.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from weight_convert import rules
from weight_convert.errors import CoverageError, ShapeMismatchError

__all__ = ["CoverageError", "ShapeMismatchError", "plan_to_port", "to_port", "to_torch"]


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def plan_to_port(
    port_paths: Iterable[str],
    torch_keys: Iterable[str],
    *,
    allow_missing: Sequence[str] = (),
    allow_unused: Sequence[str] = (),
) -> dict[str, str]:
    """Port path -> PyTorch key for every port variable; raises ``CoverageError`` unless every
    PyTorch key is used and every port variable is set (exceptions only by named patterns)."""
    available = set(torch_keys)
    plan, unset = {}, []
    for path in port_paths:
        key = rules.torch_key(path)
        if key in available:
            plan[path] = key
        elif not _matches(path, allow_missing):
            unset.append(f"{path} (from {key})")
    used = set(plan.values())
    unused = sorted(k for k in available - used if not _matches(k, allow_unused))
    if unused or unset:
        raise CoverageError(unused, unset)
    return plan


def to_port(
    state_dict: Mapping[str, np.ndarray],
    port_shapes: Mapping[str, tuple[int, ...]],
    **coverage,
) -> dict[str, np.ndarray]:
    """Arrays for every port variable from a PyTorch state dict (numpy values), strict both ways."""
    plan = plan_to_port(port_shapes, state_dict, **coverage)
    out = {}
    for path, key in plan.items():
        value = rules.port_tensor(path, np.asarray(state_dict[key]))
        if tuple(value.shape) != tuple(port_shapes[path]):
            raise ShapeMismatchError(
                f"{key}: shape {tuple(np.shape(state_dict[key]))} gives {tuple(value.shape)} "
                f"for {path}, which expects {tuple(port_shapes[path])}"
            )
        out[path] = value
    return out


def to_torch(port_values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A PyTorch state dict (numpy values) from the port's variables."""
    out = {}
    for path, value in port_values.items():
        key = rules.torch_key(path)
        if key in out:
            raise KeyError(f"two port variables map to {key}")
        out[key] = rules.torch_tensor(path, np.asarray(value))
    return out
