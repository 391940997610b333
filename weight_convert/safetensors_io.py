"""The safetensors format read and written one tensor at a time. Framework-free (NumPy).

A file is an 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}`` and the tensors' bytes. Reading
gives ``LazyTensor``s that read their own byte range on ``load()`` (``os.pread`` into a fresh
array: no memory-mapped pages stay resident). ``StreamWriter`` writes each tensor's bytes as it
comes and the header at the end, so converting a checkpoint never holds more than one tensor.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path

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
    """Write a safetensors file tensor by tensor: ``add(name, array)`` appends the bytes to a
    scratch file beside ``path``; ``close()`` writes the header and the data to ``path`` (the
    header needs every shape, so it comes last). ``path`` should itself be a temporary name that
    the caller renames (``convert._atomic``)."""

    def __init__(self, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self._data_path = self.path.with_name(self.path.name + ".data")
        self._data = open(self._data_path, "wb")  # noqa: SIM115 - closed in close()
        self._header: dict[str, dict] = {}
        self._offset = 0

    def add(self, name: str, array: np.ndarray) -> None:
        if name in self._header:
            raise ValueError(f"tensor {name} written twice")
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype not in _NAMES:
            raise ValueError(f"{name}: dtype {array.dtype} has no safetensors name")
        data = array.astype(dtype, copy=False).reshape(-1).view(np.uint8)
        self._data.write(memoryview(data))
        end = self._offset + data.nbytes
        self._header[name] = {
            "dtype": _NAMES[dtype],
            "shape": list(array.shape),
            "data_offsets": [self._offset, end],
        }
        self._offset = end

    def close(self) -> None:
        self._data.close()
        header = dict(self._header)
        if self.metadata:
            header["__metadata__"] = self.metadata
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes with spaces
        try:
            with open(self.path, "wb") as out, open(self._data_path, "rb") as data:
                out.write(struct.pack("<Q", len(text)))
                out.write(text)
                shutil.copyfileobj(data, out, 1 << 24)
        finally:
            self._data_path.unlink(missing_ok=True)

    def abort(self) -> None:
        self._data.close()
        self._data_path.unlink(missing_ok=True)
