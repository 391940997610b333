"""How each bad safetensors file of test_bad_safetensors.py is made: the bytes written by hand
(8-byte little-endian header length, the JSON header, the data) from a good file, a tiny Swin in
the official layout (``relative_position_index`` and ``attn_mask`` buffers included) that the
converter detects and converts. ``Parts`` holds the pieces a bad file bends: the header's
``(key, value)`` pairs in order (a key may repeat), the data, text before the JSON object, and the
header length written."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weight_convert import layouts
from weight_convert.frameworks.reference import randomize_
from weight_convert.safetensors_io import DTYPES
from zoo.models import create_model
from zoo.registry import FAMILIES

__all__ = [
    "INDEX",
    "TARGET",
    "Parts",
    "Raw",
    "appended",
    "duplicated",
    "field_twice",
    "good_parts",
    "renamed",
    "replaced",
    "retyped",
    "set_entry",
    "shifted",
    "sparse_index",
    "trailing",
]

#: the tensor most rows bend (the last in the data: a float32 (10,))
TARGET = "head.bias"
#: the window buffer the memory row inflates
INDEX = "layers.0.blocks.0.attn.relative_position_index"
_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is (what ``json.dumps`` cannot or will not write)."""

    text: str


def _dump(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value)


@dataclass
class Parts:
    pairs: list[tuple[str, Any]]
    data: bytes
    prefix: str = ""  # text before the JSON object ...
    suffix: str = ""  # ... and after it
    length: int | None = None  # None: the header's own
    metadata: dict[str, Any] | None = field(default=None)

    def header(self) -> bytes:
        pairs = ([("__metadata__", self.metadata)] if self.metadata is not None else []) + [
            *self.pairs
        ]
        text = self.prefix + "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in pairs)
        text = (text + "}" + self.suffix).encode()
        return text + b" " * (-len(text) % 8)  # padded with spaces, as the format allows

    def write(self, path: Path) -> Path:
        header = self.header()
        length = len(header) if self.length is None else self.length
        path.write_bytes(length.to_bytes(8, "little") + header + self.data)
        return path

    def entry(self, name: str) -> dict[str, Any]:
        return next(v for k, v in self.pairs if k == name)

    def bend(self, change: Callable[[Parts], Any]) -> Parts:
        """A changed deep copy (``change`` edits it in place)."""
        out = copy.deepcopy(self)
        change(out)
        return out


def good_parts() -> Parts:
    """The tiny Swin of the swin family's test config, random weights, in the official layout."""
    config = dataclasses.asdict(FAMILIES["swin"].tiny)
    model = randomize_(create_model("swin_tiny_patch4_window7_224", **config), 0).eval()
    reference = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    state = layouts.from_reference(reference, "official", "swin", model.config)
    pairs, chunks, offset = [], [], 0
    for name, value in state.items():
        array = np.ascontiguousarray(value)
        pairs.append(
            (
                name,
                {
                    "dtype": _NAMES[array.dtype],
                    "shape": list(array.shape),
                    "data_offsets": [offset, offset + array.nbytes],
                },
            )
        )
        chunks.append(array.tobytes())
        offset += array.nbytes
    assert pairs[-1][0] == TARGET
    return Parts(pairs, b"".join(chunks), metadata={"format": "pt"})


def sparse_index(good: Parts, path: Path, side: int) -> Path:
    """The good file with ``INDEX`` claiming an int64 (side, side) (4 GiB at side 23170), its
    data last and a hole in the file (``truncate``): sparse on disk, only the header and the
    other tensors' bytes written."""
    pairs, chunks, offset = [], [], 0
    for name, entry in good.pairs:
        if name == INDEX:
            continue
        begin, end = entry["data_offsets"]
        chunks.append(good.data[begin:end])
        pairs.append((name, {**entry, "data_offsets": [offset, offset + end - begin]}))
        offset += end - begin
    nbytes = side * side * 8
    pairs.append(
        (INDEX, {"dtype": "I64", "shape": [side, side], "data_offsets": [offset, offset + nbytes]})
    )
    parts = Parts(pairs, b"".join(chunks), metadata=good.metadata)
    parts.write(path)
    with open(path, "r+b") as f:
        f.truncate(8 + len(parts.header()) + offset + nbytes)
    return path


# ----------------------------------------------------------------------- how each bad file is made


def set_entry(key: str, value: Any, name: str = TARGET) -> Callable[[Parts], None]:
    """Set ``key`` of tensor ``name``'s entry (``dtype``, ``shape``, ``data_offsets`` or a field
    the format does not have); value None deletes it."""

    def change(parts: Parts) -> None:
        entry = parts.entry(name)
        if value is None:
            del entry[key]
        else:
            entry[key] = value

    return change


def renamed(old: str, new: str) -> Callable[[Parts], None]:
    """Tensor ``old`` called ``new`` (a name another tensor has: the name twice, two ranges)."""

    def change(parts: Parts) -> None:
        parts.pairs = [(new if k == old else k, v) for k, v in parts.pairs]

    return change


def shifted(by: int, name: str = TARGET, pad: bool = True) -> Callable[[Parts], None]:
    """Tensor ``name``'s range moved by ``by`` bytes; with ``pad`` (a positive ``by``), that
    many bytes inserted before its data: a gap, everything else in place."""

    def change(parts: Parts) -> None:
        offsets = parts.entry(name)["data_offsets"]
        begin = offsets[0]
        offsets[:] = [offsets[0] + by, offsets[1] + by]
        if pad:
            parts.data = parts.data[:begin] + b"\0" * by + parts.data[begin:]

    return change


def replaced(**fields: Any) -> Callable[[Parts], None]:
    """``Parts`` fields set: ``prefix`` / ``suffix`` around the JSON object, the header
    ``length`` written, ``metadata``."""

    def change(parts: Parts) -> None:
        for key, value in fields.items():
            setattr(parts, key, value)

    return change


def retyped(dtype: str, shape: list[int], name: str = TARGET) -> Callable[[Parts], None]:
    """Tensor ``name`` declared ``dtype`` of ``shape`` (the same bytes)."""

    def change(parts: Parts) -> None:
        parts.entry(name).update(dtype=dtype, shape=shape)

    return change


def appended(name: str, entry: dict[str, Any] | None) -> Callable[[Parts], None]:
    """A tensor ``name`` after the others: ``entry`` with a zero-byte range at the end of the
    data (None: a null entry)."""

    def change(parts: Parts) -> None:
        end = len(parts.data)
        value = None if entry is None else {**entry, "data_offsets": [end, end]}
        parts.pairs.append((name, value))

    return change


def duplicated(name: str) -> Callable[[Parts], None]:
    """Tensor ``name``'s entry given again, as it is, after the others."""
    return lambda parts: parts.pairs.append((name, copy.deepcopy(parts.entry(name))))


def field_twice(parts: Parts) -> None:
    """``"dtype"`` twice in the last tensor's entry."""
    name, entry = parts.pairs[-1]
    parts.pairs[-1] = (name, Raw('{"dtype":"F32",' + json.dumps(entry)[1:]))


def trailing(count: int) -> Callable[[Parts], None]:
    """``count`` zero bytes after the last tensor's data."""

    def change(parts: Parts) -> None:
        parts.data += bytes(count)

    return change
