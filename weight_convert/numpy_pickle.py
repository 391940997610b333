"""NumPy arrays unpickled from the bytes the pickle holds, without NumPy's unpickling functions.
Framework-free (NumPy).

A pickle of arrays names ``numpy.core.multiarray._reconstruct`` and ``BUILD``s the result with
``(1, shape, dtype, is_fortran, data)`` (protocols 0-4), ``numpy.core.numeric._frombuffer``
(protocol 5), ``multiarray.scalar`` (NumPy scalars) and ``numpy.dtype`` (``BUILD`` with the byte
order). NumPy's own functions make whatever they are asked: ``numpy.ndarray(shape)`` is
uninitialised memory of any size, ``ndarray.__setstate__`` of an object array reads past a
list shorter than its shape (a segfault). The stand-ins here make an array only from data in the
pickle: exactly ``prod(shape) * itemsize`` bytes (``prod(shape)`` items for an object array),
else ``CheckpointError``; a call no NumPy writes (``numpy.ndarray(...)`` itself, another
subtype, a codec) is ``UnsafePickleError``. Structured and sub-array dtypes are refused
(``UnsupportedTensorError``): no checkpoint stores weights in them.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import numpy as np

from weight_convert.errors import CheckpointError, UnsupportedTensorError
from weight_convert.safe_pickle import BASE_GLOBALS, Sealed, refuse, stand_ins

__all__ = ["GLOBALS", "NUMPY_GLOBALS"]

_NAME = re.compile(r"([biufcSUVOMm])(\d{1,9})\Z")  # how a pickle names a dtype: "f4", "U3"
_UNIT = re.compile(r"(Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as|generic)\Z")
_MAX_DIMS = 64  # NumPy's own limit
_NATIVE = "<" if sys.byteorder == "little" else ">"


class _NdarrayType(Sealed):
    """``numpy.ndarray`` as a pickle names it: only the subtype argument of ``_reconstruct``."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise refuse("numpy.ndarray", "directly: uninitialised memory of any size")


NDARRAY = _NdarrayType()


class DTypeSpec:
    """What ``numpy.dtype(name, align, copy)`` and its ``BUILD`` say: ``dtype()`` makes it."""

    def __init__(self, name: str) -> None:
        self.name, self.order, self.unit = name, "=", ""

    def __setstate__(self, state: Any) -> None:
        """``(3, order, subarray, names, fields, elsize, alignment, flags[, metadata])``."""
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise CheckpointError("corrupt pickle: a NumPy dtype with a malformed state")
        if any(part is not None for part in state[2:5]):
            raise UnsupportedTensorError(
                "its pickle holds a NumPy array of a structured or sub-array dtype, which the "
                "converter does not read"
            )
        if state[1] not in ("<", ">", "|", "="):
            raise CheckpointError(f"corrupt pickle: NumPy byte order {str(state[1])[:8]!r}")
        self.order = state[1]
        if self.name[0] in "Mm" and len(state) == 9:  # datetime64 / timedelta64: the unit
            meta = state[8]
            if not (isinstance(meta, tuple) and len(meta) == 2 and isinstance(meta[1], tuple)):
                meta = (None, ())
            unit, count = (meta[1] + (None, None))[:2]
            unit = unit.decode("latin-1") if isinstance(unit, bytes) else unit
            if not (isinstance(unit, str) and _UNIT.match(unit) and type(count) is int):
                raise CheckpointError("corrupt pickle: a NumPy datetime dtype without its unit")
            self.unit = "" if unit == "generic" else f"[{count}{unit}]"

    def dtype(self) -> np.dtype:
        dtype = np.dtype(self.name + self.unit)
        return dtype if self.order in ("|", "=", _NATIVE) else dtype.newbyteorder(self.order)


def _dtype(name: Any, align: Any = False, copy: Any = False) -> DTypeSpec:
    if not isinstance(name, str) or not _NAME.match(name) or type(align) not in (bool, int):
        raise refuse("numpy.dtype", f"with {str(name)[:20]!r}, no dtype name NumPy writes")
    try:
        np.dtype(name)
    except TypeError:
        raise refuse("numpy.dtype", f"with {name!r}, no dtype name NumPy writes") from None
    return DTypeSpec(name)


def _shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > _MAX_DIMS:
        raise CheckpointError("corrupt pickle: an array shape that is no tuple of sizes")
    for n in shape:
        if type(n) is not int or not 0 <= n < 1 << 63:
            raise CheckpointError(f"corrupt pickle: an array size of {str(n)[:40]}")
    return shape


def _data(data: Any, dtype: np.dtype, shape: tuple[int, ...]) -> Any:
    """``data`` checked to hold exactly the array's elements: bytes (a latin-1 ``str`` from a
    Python 2 pickle; a ``bytearray``), or a list for an object array."""
    count = math.prod(shape)
    if dtype.hasobject:
        if type(data) is not list or len(data) != count:
            raise CheckpointError(
                f"corrupt pickle: an object array of shape {shape} with "
                f"{len(data) if isinstance(data, list) else 'no'} items"
            )
        return data
    if isinstance(data, str):
        data = data.encode("latin-1")
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError(f"corrupt pickle: array data of type {type(data).__name__}")
    if len(data) != count * dtype.itemsize:
        raise CheckpointError(
            f"corrupt pickle: an array of shape {shape} ({dtype}) with {len(data)} bytes of "
            f"data, not {count * dtype.itemsize}"
        )
    return data


def _spec(dtype: Any) -> np.dtype:
    if not isinstance(dtype, DTypeSpec):
        raise CheckpointError("corrupt pickle: an array without a NumPy dtype")
    return dtype.dtype()


class Array(np.ndarray):
    """An array ``_reconstruct`` makes empty; its ``BUILD`` fills it from the state's data,
    checked (``np.asarray`` gives the plain array)."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise CheckpointError("corrupt pickle: a NumPy array with a malformed state")
        if len(state) == 5 and state[0] != 1:
            raise CheckpointError(f"corrupt pickle: NumPy array state version {state[0]!r}")
        shape, dtype, fortran, data = state[-4:]
        shape, dtype = _shape(shape), _spec(dtype)
        if type(fortran) not in (bool, int):
            raise CheckpointError("corrupt pickle: a NumPy array with a malformed state")
        data = _data(data, dtype, shape)
        super().__setstate__((1, shape, dtype, bool(fortran), data))


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> Array:
    """``_reconstruct(numpy.ndarray, (0,), b'b')``: the empty array its ``BUILD`` fills."""
    if subtype is not NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise refuse("numpy _reconstruct", "not as an empty numpy.ndarray to fill")
    return np.ndarray.__new__(Array, (0,), np.int8)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None) -> np.ndarray:
    """Protocol 5: the array over ``buf`` (its bytes in ``order``; ``'K'``: C order of the axes
    ``axis_order`` permutes)."""
    dtype, shape = _spec(dtype), _shape(shape)
    if dtype.hasobject or not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F", "K"):
        raise refuse("numpy _frombuffer", "not with the bytes of a C, F or K ordered array")
    if axis_order is not None and (
        order != "K"
        or not isinstance(axis_order, tuple)
        or sorted(axis_order) != list(range(len(shape)))
    ):
        raise CheckpointError(f"corrupt pickle: axis order {str(axis_order)[:40]}")
    array = np.frombuffer(_data(buf, dtype, shape), dtype)
    array = array.reshape(shape, order="C" if order == "K" else order)
    return (array if axis_order is None else array.transpose(axis_order)).view(Array)


def _scalar(dtype: Any, data: Any) -> np.generic:
    dtype = _spec(dtype)
    if dtype.hasobject:
        raise refuse("numpy scalar", "of an object dtype")
    return np.frombuffer(_data(data, dtype, ()), dtype)[0]


def _globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): NDARRAY}
    functions: dict[tuple[str, str], Any] = {("numpy", "dtype"): _dtype}
    # Arrays pickled by NumPy 1.x name numpy.core, by NumPy 2.x numpy._core: same functions.
    for package in ("numpy.core", "numpy._core"):
        functions[(f"{package}.multiarray", "_reconstruct")] = _reconstruct
        functions[(f"{package}.multiarray", "scalar")] = _scalar
        functions[(f"{package}.numeric", "_frombuffer")] = _frombuffer  # protocol 5 arrays
    return {**table, **stand_ins(functions)}


#: NumPy's globals as pickles of arrays name them -> their stand-ins
GLOBALS = _globals()

#: (module, name) -> the stand-in an allowed global resolves to: everything a pickle of NumPy
#: arrays in dicts / lists / tuples needs, and nothing that can reach the file system or run code
NUMPY_GLOBALS = {**BASE_GLOBALS, **GLOBALS}
