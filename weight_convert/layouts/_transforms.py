"""Tensor rules of a layout: where a layout stores the reference's tensors differently, not only
under other names. Framework-free, lazy (a ``LazyTensor`` stays unread until written), and each
rule works both ways, so a round trip is bit-exact.

Layout side (``LayoutSpec.tensor_rules``, applied to the checkpoint's keys before the key rules
rename them, and after them when writing):

``Fuse``
    tensors the layout stores split that the reference stores as one: Hugging Face Swin's
    ``attention.self.query`` / ``key`` / ``value`` are the rows of the reference's ``attn.qkv``.
``Tied``
    one tensor stored under several keys (a tied parameter); any of them may be present (a
    ``save_pretrained`` file stores it once), those present must be equal, the first is written.

Reference side (``LayoutSpec.value_maps``, applied to a tensor once it has the reference's name):

``ValueMap``
    a shape-preserving rearrangement and its inverse: mmdetection's channel order of the Swin
    patch merging (``nn.Unfold`` order) against the official one.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from weight_convert.errors import LayoutError
from weight_convert.tensors import LazyTensor, load, release

__all__ = ["Fuse", "Tied", "ValueMap", "read_view", "write_view"]


def _lazy(value: Any) -> LazyTensor:
    if isinstance(value, LazyTensor):
        return value
    array = np.asarray(value)
    return LazyTensor(array.shape, array.dtype, lambda: array)


def _release_all(values) -> Callable[[], None]:
    def run() -> None:
        for v in values:
            release(v)

    return run


@dataclass(frozen=True)
class Fuse:
    """Layout keys ``{stem}{scope}{part}{tail}`` for every part of ``parts`` are one reference
    tensor ``{stem}{scope}{into}{tail}``: their concatenation along ``axis`` in ``parts``'
    order (``scope`` e.g. ``"attention.self."``, ``parts`` ``("query.", "key.", "value.")``,
    ``into`` ``"qkv."``). All parts or none must be present, of one dtype and equal shapes."""

    scope: str
    parts: tuple[str, ...]
    into: str
    axis: int = 0

    def _split_key(self, key: str) -> tuple[str, str, str] | None:
        for part in self.parts:
            needle = self.scope + part
            at = key.find(needle)
            if at >= 0 and (at == 0 or key[at - 1] == "."):
                return key[: at + len(self.scope)], part, key[at + len(needle) :]
        return None

    def read(self, state: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        groups: dict[str, dict[str, str]] = {}
        for key, value in state.items():
            hit = self._split_key(key)
            if hit is None:
                if key in groups:
                    raise LayoutError(f"{key} is stored both whole and as {self.parts}")
                out[key] = value
                continue
            stem, part, tail = hit
            fused = stem + self.into + tail
            if fused in state:
                raise LayoutError(f"{fused} is stored both whole and as {self.parts}")
            groups.setdefault(fused, {})[part] = key
            out.setdefault(fused, None)  # the fused tensor takes its first part's place
        for fused, found in groups.items():
            if len(found) != len(self.parts):
                absent = [p for p in self.parts if p not in found]
                raise LayoutError(f"{fused} is split in {self.parts} but {absent} are missing")
            values = [state[found[p]] for p in self.parts]
            out[fused] = self._concat(fused, [found[p] for p in self.parts], values)
        return out

    def _concat(self, fused: str, keys: list[str], values: list[Any]) -> LazyTensor:
        shapes = [tuple(np.shape(v)) for v in values]
        dtypes = {np.dtype(v.dtype) for v in values}
        first = shapes[0]
        axis = self.axis
        if (
            len(dtypes) != 1
            or not first
            or any(len(s) != len(first) for s in shapes)
            or any(s[:axis] + s[axis + 1 :] != first[:axis] + first[axis + 1 :] for s in shapes)
        ):
            raise LayoutError(
                f"{keys} cannot be joined into {fused}: shapes {shapes}, dtypes "
                f"{sorted(str(d) for d in dtypes)}"
            )
        shape = list(first)
        shape[axis] = sum(s[axis] for s in shapes)
        return LazyTensor(
            tuple(shape),
            dtypes.pop(),
            lambda: np.concatenate([load(v) for v in values], axis=axis),
            _release_all(values),
        )

    def write(self, state: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        needle = self.scope + self.into
        n = len(self.parts)
        for key, value in state.items():
            at = key.find(needle)
            if at < 0 or (at > 0 and key[at - 1] != "."):
                out[key] = value
                continue
            stem, tail = key[: at + len(self.scope)], key[at + len(needle) :]
            whole = _lazy(value)
            size = whole.shape[self.axis]
            if size % n:
                raise LayoutError(f"{key}: {size} rows do not split in {n} ({self.parts})")
            step = size // n
            shape = list(whole.shape)
            shape[self.axis] = step
            for i, part in enumerate(self.parts):
                index = [slice(None)] * len(shape)
                index[self.axis] = slice(i * step, (i + 1) * step)
                out[stem + part + tail] = LazyTensor(
                    tuple(shape),
                    whole.dtype,
                    lambda w=whole, ix=tuple(index): np.ascontiguousarray(load(w)[ix]),
                    whole.release,
                )
        return out


@dataclass(frozen=True)
class Tied:
    """One tensor stored under any of ``keys`` (a tied parameter): those present must have one
    shape, dtype and value; it is read as ``keys[0]`` and written once, as ``keys[0]``."""

    keys: tuple[str, ...]

    def read(self, state: Mapping[str, Any]) -> dict[str, Any]:
        present = [k for k in self.keys if k in state]
        if not present:
            return dict(state)
        first = state[present[0]]
        for other in present[1:]:
            value = state[other]
            same = tuple(np.shape(value)) == tuple(np.shape(first)) and np.dtype(
                value.dtype
            ) == np.dtype(first.dtype)
            if not same or not np.array_equal(load(value), load(first)):
                raise LayoutError(f"{present[0]} and {other} are one tied tensor but differ")
        out: dict[str, Any] = {}
        for key, value in state.items():
            if key == present[0]:
                out[self.keys[0]] = value
            elif key not in present:
                out[key] = value
        return out

    def write(self, state: Mapping[str, Any]) -> dict[str, Any]:
        return dict(state)


@dataclass(frozen=True)
class ValueMap:
    """Reference tensors whose key matches ``pattern`` (fnmatch) are stored rearranged by the
    layout: ``read`` gives the reference's array from the layout's, ``write`` is its inverse;
    both keep the shape."""

    pattern: str
    read: Callable[[np.ndarray], np.ndarray]
    write: Callable[[np.ndarray], np.ndarray]

    def applies(self, reference_key: str) -> bool:
        return fnmatch.fnmatchcase(reference_key, self.pattern)


def read_view(state: Mapping[str, Any], rules) -> dict[str, Any]:
    """The checkpoint's tensors as the key rules see them (``tensor_rules`` applied, lazily)."""
    view = dict(state)
    for rule in rules:
        view = rule.read(view)
    return view


def write_view(state: Mapping[str, Any], rules) -> dict[str, Any]:
    """Tensors named by the key rules as the layout stores them (``tensor_rules`` undone)."""
    out = dict(state)
    for rule in reversed(tuple(rules)):
        out = rule.write(out)
    return out


def map_values(reference: Mapping[str, Any], maps, direction: str) -> dict[str, Any]:
    """``reference`` with each ``ValueMap`` applied (``direction`` "read" or "write"), lazily."""
    if not maps:
        return dict(reference)
    out = {}
    for key, value in reference.items():
        for vm in maps:
            if vm.applies(key):
                fn = vm.read if direction == "read" else vm.write
                value = _lazy(value).map(lambda x, fn=fn: fn(np.asarray(x)), tuple(np.shape(value)))
                break
        out[key] = value
    return out
