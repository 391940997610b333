"""The safetensors format read and written one tensor at a time. Framework-free (NumPy).

A file is an 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}`` and the tensors' bytes. Reading
gives ``LazyTensor``s that read their own byte range on ``load()`` (``os.preadv`` into a fresh
array: no memory-mapped pages stay resident). ``StreamWriter`` writes the header from the
announced shapes and dtypes, then each tensor's bytes as it comes, so converting a checkpoint
never holds more than one tensor.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from weight_convert.errors import CheckpointError
from weight_convert.tensors import BFLOAT16, LazyTensor

__all__ = ["DTYPES", "StreamWriter", "read_lazy"]

#: safetensors dtype name -> NumPy dtype (bfloat16: ml_dtypes)
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": BFLOAT16,
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
#: the format's own bound on the header (safetensors refuses larger ones)
_MAX_HEADER = 100_000_000


def read_header(path: str) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensor entries, metadata, offset of the data) of a safetensors file; ``CheckpointError``
    when the header is cut short or malformed, or a tensor lies past the end of the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes)")
        (length,) = struct.unpack("<Q", head)
        if length > min(_MAX_HEADER, size - 8):
            raise CheckpointError(
                f"{path}: truncated safetensors file (header of {length} bytes, file {size})"
            )
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    start = 8 + length
    for key, entry in header.items():
        try:
            begin, end = entry["data_offsets"]
            dtype = DTYPES[entry["dtype"]]
            count = int(np.prod(entry["shape"], dtype=np.int64))
        except KeyError as e:
            raise CheckpointError(
                f"{path}: tensor {key} has an unsupported dtype or a malformed entry ({e})"
            ) from None
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {key} has a malformed entry") from None
        if end - begin != count * dtype.itemsize or begin < 0:
            raise CheckpointError(f"{path}: tensor {key}: byte range does not fit its shape")
        if start + end > size:
            raise CheckpointError(
                f"{path}: truncated safetensors file (tensor {key} ends at byte {start + end}, "
                f"file has {size})"
            )
    return header, metadata, start


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
    """``{name: LazyTensor}`` in the file's order of data, and the metadata."""
    header, metadata, start = read_header(path)
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    tensors = {}
    for key, entry in entries:
        shape, dtype = tuple(entry["shape"]), DTYPES[entry["dtype"]]
        offset = start + entry["data_offsets"][0]
        tensors[key] = LazyTensor(shape, dtype, _reader(path, offset, shape, dtype))
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
        array = np.ascontiguousarray(array)
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
