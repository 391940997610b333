"""The safetensors format read and written one tensor at a time. Framework-free (NumPy).

A file is an 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}`` and the tensors' bytes. Reading
gives ``LazyTensor``s that read their own byte range on ``load()`` (``os.preadv`` into a fresh
array: no memory-mapped pages stay resident), once the header has passed the checks of the
reference reader (the safetensors crate's ``read_metadata`` and ``Metadata::validate``): every
field of its type, the byte ranges tiling the data exactly, no key twice. ``StreamWriter``
writes the header from the announced shapes and dtypes, then each tensor's bytes as it comes,
so converting a checkpoint never holds more than one tensor.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from weight_convert.errors import CheckpointError, UnsupportedTensorError, first_line
from weight_convert.tensors import DTYPES as TENSOR_DTYPES
from weight_convert.tensors import LazyTensor

__all__ = [
    "DTYPES",
    "FORMAT_BITS",
    "MAX_HEADER",
    "Entry",
    "StreamWriter",
    "read_header",
    "read_lazy",
]

#: safetensors dtype name -> NumPy dtype (bfloat16: ml_dtypes): the dtypes the converter takes
DTYPES = {names[0]: dtype for dtype, names in TENSOR_DTYPES.items()}
#: every dtype the format names (the safetensors crate's ``Dtype``) -> bits per element; those
#: outside ``DTYPES`` are read as far as the header goes, then refused (``UnsupportedTensorError``)
FORMAT_BITS = {
    **{name: dtype.itemsize * 8 for name, dtype in DTYPES.items()},
    **{"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U16": 16, "U32": 32, "U64": 64, "C64": 64},
    **dict.fromkeys(("F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ"), 8),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
#: the format's own bound on the header (safetensors refuses larger ones)
MAX_HEADER = 100_000_000
#: JSON nesting the reference parser (serde_json) accepts, the header's own object counted
_MAX_DEPTH = 127
#: largest dimension, element count and byte offset: what a NumPy shape (int64) can hold
_INT64_MAX = 2**63 - 1


class Entry(NamedTuple):
    """One tensor of a checked safetensors header: its name, the format's dtype name, its shape
    and its byte range ``[begin, end)`` after the header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _shown(value: Any, limit: int = 100) -> str:
    """``value`` for a one-line message: a printable name as it is, anything else as JSON (or
    its repr), cut at ``limit`` characters."""
    if isinstance(value, str) and value.isprintable():
        text = value
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' ``object_pairs_hook``: the object as a dict; ``ValueError`` for a key given
    twice (the first tensor would silently be dropped) or one that is not UTF-8 text (a lone
    surrogate escape)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {_shown(key)} given twice")
        key.encode("utf-8")  # UnicodeEncodeError, a ValueError, for a lone surrogate
        out[key] = value
    return out


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """How deep ``value``'s arrays and objects nest (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _parse(path: str, text: bytes) -> dict[str, Any]:
    """The header's JSON object, read as strictly as the reference parser (serde_json): UTF-8,
    an object first, no key twice in any object, no NaN / Infinity, at most 127 levels."""
    if not text.startswith(b"{"):
        raise CheckpointError(
            f"{path}: corrupt safetensors header (it begins with {text[:8]!r}, not '{{')"
        )
    try:
        header = json.loads(
            text.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except RecursionError:
        header = None
    except ValueError as e:  # JSON syntax, UTF-8, a key twice, an integer of 4300+ digits
        raise CheckpointError(f"{path}: corrupt safetensors header ({first_line(e)})") from None
    if header is None or _depth(header) > _MAX_DEPTH:
        raise CheckpointError(
            f"{path}: corrupt safetensors header (JSON nested deeper than {_MAX_DEPTH} levels)"
        )
    return header


def _metadata(path: str, header: dict[str, Any]) -> dict[str, str]:
    """``__metadata__`` (taken out of ``header``): absent or null, or an object of strings."""
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(
            f"{path}: corrupt safetensors header (__metadata__ must map strings to strings, "
            f"not {_shown(metadata)})"
        )
    try:
        for value in metadata.values():
            value.encode("utf-8")
    except UnicodeEncodeError:
        raise CheckpointError(
            f"{path}: corrupt safetensors header (__metadata__ is not UTF-8)"
        ) from None
    return metadata


def _sizes(value: Any) -> bool:
    """A JSON list of integers 0 .. 2^63-1 (no bool, no float: what a NumPy shape holds)."""
    return isinstance(value, list) and all(type(v) is int and 0 <= v <= _INT64_MAX for v in value)


def _entry(path: str, name: str, entry: Any) -> Entry:
    """One tensor's header entry, each field of the type the format gives it, its byte range as
    long as its shape and dtype need (Python ints: nothing overflows)."""
    where = f"{path}: tensor {_shown(name)}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: malformed entry {_shown(entry)} (not an object)")
    absent = [f for f in ("dtype", "shape", "data_offsets") if f not in entry]
    if absent:
        raise CheckpointError(f"{where}: malformed entry (no {absent[0]})")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in FORMAT_BITS:
        raise CheckpointError(f"{where}: dtype {_shown(dtype)} is none the format names")
    if not _sizes(shape):
        raise CheckpointError(
            f"{where}: shape {_shown(shape)} is not a list of sizes (integers 0 .. 2^63-1)"
        )
    if not _sizes(offsets) or len(offsets) != 2 or offsets[1] < offsets[0]:
        raise CheckpointError(
            f"{where}: data_offsets {_shown(offsets)} are not [begin, end] with "
            "0 <= begin <= end <= 2^63-1"
        )
    count = 1
    for size in shape:
        count *= size
        if count > _INT64_MAX:
            raise CheckpointError(f"{where}: shape {_shown(shape)} holds over 2^63-1 elements")
    (begin, end), bits = offsets, count * FORMAT_BITS[dtype]
    if bits % 8 or end - begin != bits // 8:
        raise CheckpointError(
            f"{where}: data_offsets [{begin}, {end}] hold {end - begin} bytes; shape "
            f"{_shown(shape)} of {dtype} needs {bits / 8:g}"
        )
    return Entry(name, dtype, tuple(shape), begin, end)


def _check_tiling(path: str, entries: list[Entry], size: int, start: int) -> None:
    """The byte ranges, in order, tile the data exactly: the first begins at 0, each where the
    one before ends (no overlap, no gap), the last at the end of the file."""
    end = 0
    for entry in entries:
        if entry.begin != end:
            what = "overlap" if entry.begin < end else "leave a gap after"
            raise CheckpointError(
                f"{path}: tensor {_shown(entry.name)}: data_offsets [{entry.begin}, {entry.end}] "
                f"{what} the tensor before it, which ends at {end} (tensors tile the data in order)"
            )
        end = entry.end
    if start + end > size:
        raise CheckpointError(
            f"{path}: truncated safetensors file (tensor data ends at byte {start + end}, "
            f"file has {size})"
        )
    if start + end < size:
        raise CheckpointError(
            f"{path}: corrupt safetensors file ({size - start - end} byte(s) after the last "
            "tensor's data)"
        )


def read_header(path: str) -> tuple[list[Entry], dict[str, str], int]:
    """(tensor entries in the order of their data, metadata, offset of the data) of a
    safetensors file, checked as the safetensors crate does (``read_metadata``,
    ``Metadata::validate``) and more strictly where NumPy needs it or the crate is silent.

    ``CheckpointError`` when the header is cut short, longer than the format allows
    (100,000,000 bytes), not one JSON object of the format's fields and types (a key twice, a
    dimension or offset that is not an integer 0 .. 2^63-1, a shape of more than 2^63-1
    elements, ``__metadata__`` not strings), or when the tensors' byte ranges do not tile the
    data exactly (overlap, gap, bytes after the last, a range not the size of its shape).
    ``UnsupportedTensorError`` then for a dtype of the format that ``DTYPES`` lacks (float8,
    complex, unsigned wider than 8 bits, 4 and 6-bit floats).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER:
            raise CheckpointError(
                f"{path}: corrupt safetensors file (header of {length} bytes; the format allows "
                f"{MAX_HEADER})"
            )
        if 8 + length > size:
            raise CheckpointError(
                f"{path}: truncated safetensors file (header of {length} bytes, file {size})"
            )
        header = _parse(path, f.read(length))
    metadata = _metadata(path, header)
    entries = sorted(
        (_entry(path, name, entry) for name, entry in header.items()),
        key=lambda e: (e.begin, e.end),
    )
    start = 8 + length
    _check_tiling(path, entries, size, start)
    for entry in entries:
        if entry.dtype not in DTYPES:
            raise UnsupportedTensorError(
                f"{path}: tensor {_shown(entry.name)} is {entry.dtype}, a dtype the converter "
                f"does not take (it reads {', '.join(DTYPES)})"
            )
    return entries, metadata, start


def _reader(path: str, offset: int, shape: tuple[int, ...], dtype: np.dtype):
    def load() -> np.ndarray:
        out = np.empty(shape, dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        with open(path, "rb") as f:
            done = 0
            while done < len(view):
                n = os.preadv(f.fileno(), [view[done:]], offset + done)
                if n == 0:
                    raise CheckpointError(f"{path}: truncated while reading a tensor")
                done += n
        return out

    return load


def read_lazy(path: str) -> tuple[dict[str, LazyTensor], dict[str, str]]:
    """``{name: LazyTensor}`` in the file's order of data, and the metadata (``read_header``'s
    errors; nothing but the header is read)."""
    entries, metadata, start = read_header(path)
    tensors = {}
    for entry in entries:
        dtype = DTYPES[entry.dtype]
        load = _reader(path, start + entry.begin, entry.shape, dtype)
        tensors[entry.name] = LazyTensor(entry.shape, dtype, load)
    return tensors, metadata


class StreamWriter:
    """Write a safetensors file tensor by tensor. The header needs every name, shape and dtype
    first: ``StreamWriter(path, [(name, shape, dtype), ...], metadata)`` writes it, then
    ``add(name, array)`` appends each tensor's bytes in that order and ``close()`` checks they
    all came. ``path`` should be a temporary name that the caller renames
    (``outputs.atomic``)."""

    def __init__(
        self,
        path: str | Path,
        entries: Sequence[tuple[str, tuple[int, ...], np.dtype]],
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        header: dict[str, Any] = {}
        offset = 0
        for name, shape, dtype in entries:
            dtype = np.dtype(dtype)
            if dtype not in _NAMES:
                raise ValueError(f"{name}: dtype {dtype} has no safetensors name")
            if name in header:
                raise ValueError(f"tensor {name} listed twice")
            end = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            header[name] = {
                "dtype": _NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, end],
            }
            offset = end
        self._expected = [(name, tuple(shape), np.dtype(dtype)) for name, shape, dtype in entries]
        if metadata:
            header["__metadata__"] = dict(metadata)
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes with spaces
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close() / abort()
        self._file.write(struct.pack("<Q", len(text)) + text)
        self._done = 0

    def add(self, name: str, array: np.ndarray) -> None:
        want = self._expected[self._done] if self._done < len(self._expected) else None
        array = np.require(array, requirements="C")
        if want is None or (name, tuple(array.shape), array.dtype) != want:
            got = (name, tuple(array.shape), array.dtype)
            raise ValueError(f"tensor {got} written where the header announced {want}")
        self._file.write(memoryview(array.reshape(-1).view(np.uint8)))
        self._done += 1

    def close(self) -> None:
        self._file.close()
        if self._done != len(self._expected):
            raise ValueError(f"{len(self._expected) - self._done} announced tensor(s) not written")

    def abort(self) -> None:
        self._file.close()
