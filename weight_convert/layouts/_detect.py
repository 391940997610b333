"""Detection of a checkpoint's layout, family and architecture, and renaming to and from the
reference's keys. Framework-free, and knows no family: every layout comes from the registry.

``match_layout`` checks a state dict against one layout of one family, strictly (every tensor
used, every reference tensor present, every shape right, unless ``Allow`` says otherwise);
``detect`` tries every registered layout. The ``Detected`` they return holds the key mapping,
so ``to_reference`` only renames.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weight_convert.errors import (
    LayoutError,
    MissingKeysError,
    ShapeMismatchError,
    UnexpectedKeysError,
)
from weight_convert.layouts._registry import (
    LayoutSpec,
    all_layouts,
    infer_config,
    layout_spec,
)
from weight_convert.layouts._templates import dropped_note, leaf, map_keys
from weight_convert.layouts._transforms import map_values, write_view
from zoo.configs import (
    Config,
    arch_fields,
    config_to_dict,
    match_variant,
    nearest_variant,
    overrides_from,
    reference_shapes,
    same_variants,
)

__all__ = [
    "STRICT",
    "Allow",
    "Detected",
    "describe",
    "detect",
    "from_reference",
    "match_layout",
    "to_reference",
]


@dataclass(frozen=True)
class Allow:
    """Deliberate exceptions to strict coverage (``--allow-missing`` / ``--allow-unused``):
    fnmatch patterns matched against a key in the checkpoint's layout or in the reference's
    names."""

    missing: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()

    @staticmethod
    def _match(names: Iterable[str], patterns: Iterable[str]) -> bool:
        return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)

    def allows_missing(self, *names: str) -> bool:
        return self._match(names, self.missing)

    def allows_unused(self, *names: str) -> bool:
        return self._match(names, self.unused)


STRICT = Allow()


@dataclass
class Detected:
    """What ``detect`` (or ``match_layout``) found: the layout, the family, the config (of the
    matching variant with the checkpoint's head when there is one), the variant name (the
    registered variant of that architecture; None for a custom architecture, whose
    ``nearest_variant`` names the closest one) and the checkpoint key -> reference key of every
    learned tensor."""

    layout: str
    family: str
    config: Config
    variant: str | None
    notes: list[str] = field(default_factory=list)
    #: reference keys the checkpoint lacks, allowed by ``allow``
    missing: list[str] = field(default_factory=list)
    allow: Allow = STRICT
    #: checkpoint key -> reference key of every learned tensor (derived buffers and tensors
    #: outside the model are not in it)
    mapping: dict[str, str] = field(default_factory=dict)

    @property
    def nearest_variant(self) -> str:
        """``variant``, or for a custom architecture the registered variant of the family
        nearest to it (``zoo.configs.nearest_variant``): never None."""
        return self.variant if self.variant is not None else nearest_variant(self.config)[0]

    def overrides(self) -> dict[str, Any]:
        """Config fields that differ from ``nearest_variant``'s (the variant's when there is
        one): ``create_model(nearest_variant, **overrides())`` builds exactly ``config``, the
        model this checkpoint loads into strictly, in every framework."""
        return overrides_from(self.nearest_variant, self.config)


# --------------------------------------------------------------------------- one layout


def _same_architecture(a: Config, b: Config) -> bool:
    fields = arch_fields(a)
    return type(a) is type(b) and all(getattr(a, f) == getattr(b, f) for f in fields)


def _coverage(
    state_dict: Mapping[str, Any],
    spec: LayoutSpec,
    learned: dict[str, str],
    unmatched: list[str],
    ignored: list[str],
    config: Config,
    allow: Allow,
) -> tuple[dict[str, str], list[str], list[str]]:
    """The learned tensors the model has (checkpoint key -> reference key), the reference keys
    missing by ``allow``, and notes; raises ``MissingKeysError`` / ``UnexpectedKeysError`` /
    ``ShapeMismatchError`` beyond ``allow``."""
    where = f"{spec.label} checkpoint"
    shapes = reference_shapes(config)
    extra = [k for k, r in learned.items() if r not in shapes]
    ignored = ignored + [k for k in extra if allow.allows_unused(k, learned[k])]
    unexpected = unmatched + [k for k in extra if k not in ignored]
    learned = {k: r for k, r in learned.items() if r in shapes}
    present = set(learned.values())
    missing = [r for r in shapes if r not in present]
    named = {r: spec.layout_key(r) or r for r in missing}
    allowed = [r for r in missing if allow.allows_missing(r, named[r])]
    if len(allowed) < len(missing):
        absent = [named[r] for r in missing if r not in allowed]
        raise MissingKeysError(absent, where, unexpected)
    if unexpected:
        raise UnexpectedKeysError(unexpected, where)
    notes = []
    if ignored:
        notes.append(f"{len(ignored)} unexpected tensor(s) dropped by --allow-unused: {ignored}")
    if allowed:
        notes.append(
            f"{len(allowed)} missing tensor(s) allowed by --allow-missing: "
            f"{[named[r] for r in allowed]}"
        )
    for key, ref in learned.items():
        got = tuple(np.shape(state_dict[key]))
        if got != shapes[ref]:
            raise ShapeMismatchError(
                f"{where}: {key} has shape {got}; the inferred architecture needs {shapes[ref]}"
            )
    return learned, allowed, notes


def match_layout(
    state_dict: Mapping[str, Any],
    layout: str,
    family: str,
    allow: Allow = STRICT,
    config: Config | None = None,
    config_from_file: bool = False,
) -> Detected:
    """``state_dict`` read as ``layout`` of ``family``: its config (solved from the shapes; with
    ``config`` given, the state dict must have that architecture, ``LayoutError`` otherwise),
    the key mapping, notes and the reference keys missing by ``allow``. With
    ``config_from_file`` (a config the checkpoint states, as a Hugging Face ``config.json``
    does) ``config`` is taken as it is, fields no shape shows included, and held to every shape.

    Raises ``UnexpectedKeysError`` / ``MissingKeysError`` / ``ShapeMismatchError`` (or
    ``LayoutError`` when the architecture cannot be solved or a derived buffer is wrong) unless
    the tensors form this layout of this family exactly.
    """
    spec = layout_spec(layout, family)
    state_dict = spec.view(state_dict)  # split / tied tensors as the reference stores them
    mapping, unmatched, dropped = map_keys(state_dict, spec.key_rules)
    ignored = [k for k in unmatched if allow.allows_unused(k)]
    unmatched = [k for k in unmatched if k not in ignored]
    if not mapping:
        raise LayoutError("no tensor of the model")
    seen: dict[str, str] = {}
    for key, ref in mapping.items():
        if ref in seen:
            raise LayoutError(f"{seen[ref]} and {key} both map to {ref}")
        seen[ref] = key
    reference = {ref: state_dict[key] for key, ref in mapping.items()}
    try:
        inferred, notes = infer_config(reference, family)
    except LayoutError:
        if unmatched:  # the keys outside the layout say more than what could not be solved
            raise UnexpectedKeysError(unmatched, f"{spec.label} checkpoint") from None
        raise
    if config is None:
        config = dataclasses.replace(inferred, **dict(spec.implies))
    elif config_from_file:  # what the shapes could not tell, the file's config says
        notes = ["architecture from the checkpoint's config, held to every tensor's shape"]
    elif not _same_architecture(config, inferred):
        raise LayoutError(
            f"{spec.label} state dict does not have the architecture of "
            f"{match_variant(config) or 'the config asked for'}"
        )
    else:  # the weights' meaning is the file's
        config = dataclasses.replace(config, **dict(spec.implies))
    if dropped:
        notes.append(dropped_note(dropped))
    derived = {k: r for k, r in mapping.items() if leaf(r) in spec.derived_leaves}
    for key, ref in derived.items():
        spec.derived.check(key, ref, state_dict[key], config)
    if derived:
        notes.append(f"{len(derived)} derived buffer(s) checked and dropped")
    learned = {k: r for k, r in mapping.items() if k not in derived}
    learned, missing, more = _coverage(state_dict, spec, learned, unmatched, ignored, config, allow)
    notes += more + list(spec.notes)
    variant = match_variant(config)
    alike = [name for name in same_variants(config) if name != variant]
    if alike:
        notes.append(
            f"{variant} named; {', '.join(alike)} ha{'ve' if len(alike) > 1 else 's'} the same "
            "tensors (they differ in training settings only: the file cannot tell them apart)"
        )
    return Detected(layout, family, config, variant, notes, missing, allow, learned)


# --------------------------------------------------------------------------- every layout


def _summary(state_dict: Mapping[str, Any]) -> str:
    keys = list(state_dict)
    return f"{len(keys)} tensor(s), first keys {keys[:4]}"


def _closest_error(state_dict: Mapping[str, Any], tried: list[tuple[int, str, LayoutError]]):
    """The error to raise when no layout fits, from ``(keys covered, layout label, error)`` of
    every layout that covered any. The layout covering most keys (more than half) with the
    fewest problems names what is wrong better than "unknown" when its problem is missing /
    unexpected tensors or a shape; so does the one layout that covers every key, whatever its
    problem (the architecture cannot be solved, a derived buffer is wrong)."""
    specific = (MissingKeysError, UnexpectedKeysError, ShapeMismatchError)

    def problems(t) -> tuple[int, int]:
        e = t[2]
        count = len(getattr(e, "keys", ())) + len(getattr(e, "unexpected", ())) or 1
        return count, -t[0]

    close = [t for t in tried if 2 * t[0] > len(state_dict)]
    best = min(close, key=problems)[2] if close else None
    if isinstance(best, specific):
        return best
    whole = [t for t in tried if t[0] == len(state_dict)]
    if len(whole) == 1:
        return LayoutError(f"{whole[0][1]} checkpoint: {whole[0][2]}")
    n = len(state_dict)
    partial = "; ".join(f"{t[1]}: {t[0]}/{n} keys ({t[2]})" for t in tried)
    return LayoutError(
        f"unknown checkpoint: {_summary(state_dict)}; {partial or 'no layout matched any key'}"
    )


def detect(state_dict: Mapping[str, Any], allow: Allow = STRICT) -> Detected:
    """Layout, family, config and variant of a flat state dict, from key names and shapes
    (values stay unread but for the small derived buffers).

    Raises ``LayoutError`` (one line: what was found and which layouts matched how far) when no
    layout, or more than one giving different results, fits every tensor. When the layout that
    covers most keys (more than half) fails only by missing or unexpected keys or a shape, that
    error is raised (``MissingKeysError``, ``UnexpectedKeysError``, ``ShapeMismatchError``) so
    the message names the tensors.
    """
    if not state_dict:
        raise LayoutError("empty state dict: no tensors")
    found: list[Detected] = []
    tried: list[tuple[int, str, LayoutError]] = []
    for spec in all_layouts():
        try:
            found.append(match_layout(state_dict, spec.name, spec.family, allow))
        except LayoutError as e:
            try:
                view = spec.view(state_dict)
            except LayoutError:
                view = state_dict
            mapped, _, dropped = map_keys(view, spec.key_rules)
            covered = len(mapped) + len(dropped)
            if covered:
                tried.append((covered, spec.label, e))
    if not found:
        raise _closest_error(state_dict, tried)
    first = found[0]
    if len(found) > 1:
        if any(f.mapping != first.mapping for f in found[1:]):
            names = ", ".join(f"{f.layout}/{f.family}" for f in found)
            raise LayoutError(f"ambiguous checkpoint ({_summary(state_dict)}): fits {names}")
        first.notes.append(f"identical under {', '.join(f.layout for f in found[1:])} too")
    return first


# --------------------------------------------------------------------------- renaming


def to_reference(state_dict: Mapping[str, Any], detected: Detected) -> dict[str, Any]:
    """The reference model's state dict (its keys exactly, in its order, less the keys
    ``detected.missing`` names), values as they are (arrays or ``LazyTensor``s)."""
    spec = layout_spec(detected.layout, detected.family)
    state_dict = spec.view(state_dict)
    by_ref = {ref: key for key, ref in detected.mapping.items()}
    absent = [key for key in detected.mapping if key not in state_dict]
    if absent:
        raise LayoutError(f"not the state dict detected: it lacks {absent[:3]}")
    reference = {
        ref: state_dict[by_ref[ref]] for ref in reference_shapes(detected.config) if ref in by_ref
    }
    return map_values(reference, spec.value_maps, "read")


def from_reference(
    ref_state_dict: Mapping[str, Any],
    layout: str,
    family: str,
    config: Config | None = None,
    missing: Iterable[str] = (),
) -> dict[str, Any]:
    """The reference state dict in ``layout``'s keys, with the derived buffers that layout's
    checkpoints carry (``LayoutSpec.derived``), each right after the tensor it
    belongs to. ``config`` defaults to the one the shapes imply; ``missing`` names reference
    keys deliberately absent (``--allow-missing``), left out."""
    spec = layout_spec(layout, family)
    if config is None:
        config, _ = infer_config(ref_state_dict, family)
    missing = set(missing)
    shapes = {k: v for k, v in reference_shapes(config).items() if k not in missing}
    if set(shapes) != set(ref_state_dict):
        absent = sorted(set(shapes) - set(ref_state_dict))[:3]
        extra = sorted(set(ref_state_dict) - set(shapes))[:3]
        raise LayoutError(f"not a reference state dict: missing {absent}, unexpected {extra}")
    make = spec.derived.make if spec.derived is not None else None
    derived = make(config, list(shapes)) if make is not None else {}
    ref_state_dict = map_values(ref_state_dict, spec.value_maps, "write")
    out: dict[str, Any] = {}
    for ref in shapes:
        for key, value in [(ref, ref_state_dict[ref]), *derived.get(ref, ())]:
            name = spec.layout_key(key)
            if name is None:
                raise LayoutError(f"{spec.label}: no key rule names {key}")
            out[name] = value
    return write_view(out, spec.tensor_rules)


def describe(detected: Detected, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Summary for ``inspect``: layout, family, variant (None for a custom architecture), the
    nearest variant and the overrides that build the checkpoint's config from it
    (``create_model(nearest_variant, **overrides)``), config, parameter count, dtypes."""
    reference = to_reference(state_dict, detected)
    view = layout_spec(detected.layout, detected.family).view(state_dict)
    return {
        "layout": detected.layout,
        "family": detected.family,
        "variant": detected.variant,
        "nearest_variant": detected.nearest_variant,
        "overrides": detected.overrides(),
        "config": config_to_dict(detected.config),
        "parameters": int(sum(int(np.prod(v.shape)) for v in reference.values())),
        "tensors": len(state_dict),
        "derived_buffers": len(view) - len(reference),
        "dtypes": sorted({str(v.dtype) for v in state_dict.values()}),
        "notes": list(detected.notes),
    }
