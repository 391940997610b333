"""Tensors read on demand, and the dtypes the converter carries. Framework-free (NumPy and
ml_dtypes; torch only for tensors that come from a torch file).

A ``LazyTensor`` knows its shape and dtype from the file's header and reads its bytes only when
``load()`` is called, so a conversion holds one tensor at a time: detection and planning look at
shapes, the writer loads, converts and writes each tensor, then ``release()`` lets its pages go.

bfloat16 travels as ``ml_dtypes.bfloat16`` NumPy arrays (what JAX and TensorFlow use), so every
dtype a checkpoint holds (float32, float16, bfloat16) reaches the output as it was.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np

__all__ = [
    "BFLOAT16",
    "CARRIED_DTYPES",
    "DTYPES",
    "check_dtypes",
    "FLOAT_DTYPES",
    "LazyTensor",
    "from_torch",
    "is_float",
    "load",
    "release",
    "as_torch_tensor",
    "torch_dtype",
]

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
#: the floating dtypes ``--dtype`` accepts, by name
FLOAT_DTYPES = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": BFLOAT16,
}


#: every dtype the converter carries, the one table the file formats' names come from: the
#: model's floating dtypes and the integer / boolean ones of buffers
#: (``relative_position_index``). NumPy dtype -> (safetensors name, torch name, the torch storage
#: class ``torch.save`` names). Anything else is refused on reading (``check_dtypes``).
DTYPES: dict[np.dtype, tuple[str, str, str]] = {
    np.dtype("<f8"): ("F64", "float64", "DoubleStorage"),
    np.dtype("<f4"): ("F32", "float32", "FloatStorage"),
    np.dtype("<f2"): ("F16", "float16", "HalfStorage"),
    BFLOAT16: ("BF16", "bfloat16", "BFloat16Storage"),
    np.dtype("<i8"): ("I64", "int64", "LongStorage"),
    np.dtype("<i4"): ("I32", "int32", "IntStorage"),
    np.dtype("<i2"): ("I16", "int16", "ShortStorage"),
    np.dtype("i1"): ("I8", "int8", "CharStorage"),
    np.dtype("u1"): ("U8", "uint8", "ByteStorage"),
    np.dtype("?"): ("BOOL", "bool", "BoolStorage"),
}
CARRIED_DTYPES = frozenset(DTYPES)


def check_dtypes(tensors: Any, where: str) -> None:
    """``UnsupportedTensorError`` for the first tensor of ``tensors`` (name -> array or
    ``LazyTensor``) whose dtype the converter does not carry (complex, float8, uint16 and
    wider unsigned, object, strings): one rule for every reader, before any data is read."""
    from weight_convert.errors import UnsupportedTensorError

    for key, value in tensors.items():
        dtype = np.dtype(value.dtype)
        if dtype not in CARRIED_DTYPES:  # big-endian ones too: the converter writes native
            raise UnsupportedTensorError(
                f"{where}: tensor {str(key)[:100]} has dtype {dtype}, which the model does not "
                "compute in"
            )


def is_float(dtype: Any) -> bool:
    """True for float16/32/64 and bfloat16 (which NumPy counts as a void kind)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype == BFLOAT16


class LazyTensor:
    """A tensor in a file: ``shape`` and ``dtype`` now, the data on ``load()``.

    ``np.asarray(t)`` loads it too, so code written for arrays accepts it; code that needs only
    the shape (``np.shape(t)``, ``t.shape``) reads nothing.
    """

    __slots__ = ("shape", "dtype", "_load", "_release")

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: Any,
        load: Callable[[], np.ndarray],
        release: Callable[[], None] | None = None,
    ) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._load, self._release = load, release

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def load(self) -> np.ndarray:
        return self._load()

    def release(self) -> None:
        """Drop the pages the last ``load`` mapped (memory-mapped sources); a no-op otherwise."""
        if self._release is not None:
            self._release()

    def map(
        self, fn: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...], dtype: Any = None
    ) -> LazyTensor:
        """A lazy ``fn(self.load())`` of the given result shape and dtype (None: the same)."""
        dtype = self.dtype if dtype is None else dtype
        return LazyTensor(shape, dtype, lambda: fn(self.load()), self._release)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        value = self.load()
        return value if dtype is None else value.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyTensor(shape={self.shape}, dtype={self.dtype})"


def load(value: Any) -> np.ndarray:
    """The array of a ``LazyTensor`` or an array-like."""
    return value.load() if isinstance(value, LazyTensor) else np.asarray(value)


def release(value: Any) -> None:
    if isinstance(value, LazyTensor):
        value.release()


# --------------------------------------------------------------------------- torch


def from_torch(tensor) -> np.ndarray:
    """A NumPy view of a CPU torch tensor, bfloat16 as ``ml_dtypes.bfloat16`` (no copy)."""
    import torch

    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(BFLOAT16)
    return tensor.numpy()


def torch_dtype(dtype: Any):
    """The torch dtype of a NumPy dtype (bfloat16 included)."""
    import torch

    dtype = np.dtype(dtype)
    if dtype == BFLOAT16:
        return torch.bfloat16
    return torch.from_numpy(np.empty(0, dtype)).dtype


def as_torch_tensor(array: np.ndarray):
    """A torch tensor of ``array`` (bfloat16 kept), sharing memory where NumPy allows it."""
    import torch

    array = np.asarray(array)
    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory
        array = array.copy()
    if array.dtype == BFLOAT16:
        return torch.from_numpy(np.require(array, requirements="C").view(np.int16)).view(
            torch.bfloat16
        )
    return torch.from_numpy(np.require(array, requirements="C"))


_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no libc to call (not Linux): pages stay until unmapped
        return None


_LIBC = _libc() if os.name == "posix" else None


def release_mapped(address: int, nbytes: int) -> None:
    """Give back the resident pages of a read-only file mapping (``madvise(MADV_DONTNEED)`` on
    the whole pages inside ``[address, address + nbytes)``): they are read again from the file if
    touched later, so nothing changes but the process's resident memory."""
    if _LIBC is None or nbytes <= 0:
        return
    start = -(-address // _PAGE) * _PAGE
    end = (address + nbytes) // _PAGE * _PAGE
    if end > start:
        _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)
