"""``torch.save``'s pickle, read and written without PyTorch and without running code from it.
Framework-free (NumPy).

A ``torch.save`` pickle names a few globals (``torch._utils._rebuild_tensor_v2``,
``torch.FloatStorage``, ``collections.OrderedDict``, dtypes such as ``torch.bfloat16``) and refers
to each storage's bytes by a persistent id ``('storage', storage type, key, location, numel)``.
``Unpickler`` resolves those names to stand-ins defined here, which only record what they are
given: a tensor becomes a ``TensorRef`` (storage, offset, shape, strides, dtype), and nothing from
the file is ever called. Every other global is refused (``UnsafePickleError``) before anything is
built. Tensor kinds the converter cannot take (sparse, quantized, meta, nested) unpickle to an
``Unsupported`` marker, an error only where the weights are.

``dumps_state`` writes the pickle of ``{name: tensor}`` (nested under a wrapper key) that
``torch.load`` reads, one persistent id per tensor, from names, shapes and dtypes alone.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from weight_convert import safe_pickle
from weight_convert.errors import CheckpointError, UnsupportedTensorError
from weight_convert.numpy_pickle import NUMPY_GLOBALS
from weight_convert.safe_pickle import PLAIN_GLOBALS, RestrictedUnpickler, Sealed, of_type, refuse
from weight_convert.tensors import DTYPES as TENSOR_DTYPES

__all__ = ["Storage", "TensorRef", "Unsupported", "dumps_state", "loads"]

#: torch dtype name -> (NumPy dtype, legacy storage class): the dtypes the converter carries
DTYPES = {torch: (dtype, storage) for dtype, (_, torch, storage) in TENSOR_DTYPES.items()}
_BY_STORAGE = {storage: name for name, (_, storage) in DTYPES.items()}
_BY_NUMPY = {dtype: name for name, (dtype, _) in DTYPES.items()}
#: dtypes a torch pickle may name that the converter does not take (itemsize in bytes)
OTHER_DTYPES = {
    "complex128": 16,
    "complex64": 8,
    "complex32": 4,
    "uint16": 2,
    "uint32": 4,
    "uint64": 8,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1,
    "float4_e2m1fn_x2": 1,
    "qint8": 1,
    "quint8": 1,
    "qint32": 4,
    "quint4x2": 1,
    "quint2x4": 1,
}
_OTHER_STORAGES = {
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}
#: tensor kinds ``torch.save`` writes that are no dense CPU tensor, by rebuild function
_OTHER_KINDS = {
    "_rebuild_sparse_tensor": "a sparse tensor",
    "_rebuild_sparse_csr_tensor": "a sparse tensor",
    "_rebuild_qtensor": "a quantized tensor",
    "_rebuild_meta_tensor_no_storage": "a meta-device tensor (no data)",
    "_rebuild_nested_tensor": "a nested tensor",
    "_rebuild_wrapper_subclass": "a tensor subclass",
    "_rebuild_device_tensor_from_numpy": "a device tensor",
    "_rebuild_device_tensor_from_cpu_tensor": "a device tensor",
    "_rebuild_xla_tensor": "a device tensor",
    "_rebuild_mtia_tensor": "a device tensor",
}
#: inert names the arguments of the kinds above refer to (layouts, quantization schemes)
_INERT = (
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "jagged",
    "per_tensor_affine",
    "per_tensor_symmetric",
    "per_channel_affine",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
)


@dataclass(frozen=True)
class DType(Sealed):
    """A torch dtype named in the pickle; ``numpy`` is None for those the converter does not
    take."""

    name: str

    @property
    def numpy(self) -> np.dtype | None:
        row = DTYPES.get(self.name)
        return None if row is None else row[0]

    @property
    def itemsize(self) -> int:
        row = DTYPES.get(self.name)
        return int(row[0].itemsize) if row else OTHER_DTYPES[self.name]


@dataclass(frozen=True)
class StorageType(Sealed):
    """``torch.FloatStorage`` and the like (``dtype`` None: ``torch.UntypedStorage``, bytes)."""

    dtype: DType | None


@dataclass(frozen=True)
class Storage(Sealed):
    """A persistent id: ``numel`` elements of ``dtype`` in the record ``key``."""

    key: str
    dtype: DType
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass(frozen=True)
class TensorRef(Sealed):
    """A dense tensor: ``shape`` / ``strides`` (in elements) from ``offset`` in ``storage``."""

    storage: Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: DType


@dataclass(frozen=True)
class Unsupported(Sealed):
    """A tensor of a kind the converter does not take (sparse, quantized, meta, nested)."""

    kind: str


def _int(value: Any, what: str) -> int:
    """A size, stride or offset: torch's int64 and not negative; never a bigger int, whose
    products would cost minutes."""
    if type(value) is int and value >= 1 << 63:
        raise CheckpointError(
            f"corrupt tensor record: {what} of 2**{value.bit_length() - 1} or more (beyond int64)"
        )
    if type(value) is not int or value < 0:
        raise CheckpointError(f"corrupt tensor record: {what} is {str(value)[:40]!r}")
    return value


def _ints(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or len(values) > 64:
        raise CheckpointError(f"corrupt tensor record: {what} is not a tuple of sizes")
    return tuple(_int(v, what) for v in values)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: DType | None) -> TensorRef:
    if not isinstance(storage, Storage):
        raise CheckpointError("corrupt tensor record: no storage")
    shape, strides = _ints(size, "a size"), _ints(stride, "a stride")
    if len(shape) != len(strides):
        raise CheckpointError(f"corrupt tensor record: shape {shape} with strides {strides}")
    dtype = dtype or storage.dtype
    offset = _int(offset, "the offset")
    if dtype != storage.dtype:  # _rebuild_tensor_v3 views an untyped storage as its dtype
        if storage.nbytes % dtype.itemsize:
            raise CheckpointError(f"corrupt tensor record: {storage.nbytes} bytes of {dtype.name}")
    if 0 not in shape:
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if last >= storage.nbytes // dtype.itemsize:
            raise CheckpointError(
                f"corrupt tensor record: shape {shape} from offset {offset} runs past its "
                f"storage data/{storage.key} ({storage.nbytes} bytes)"
            )
    return TensorRef(storage, offset, shape, strides, dtype)


def _rebuild_v2(storage, offset, size, stride, *_rest) -> TensorRef:
    return _tensor(storage, offset, size, stride, None)


def _rebuild_v3(storage, offset, size, stride, _grad, _hooks, dtype, *_rest) -> TensorRef:
    if not isinstance(dtype, DType):
        raise CheckpointError("corrupt tensor record: no dtype")
    return _tensor(storage, offset, size, stride, dtype)


def _rebuild_parameter(data, *_rest) -> Any:
    return data


def _unsupported(kind: str) -> Callable[..., Unsupported]:
    return lambda *args, **kwargs: Unsupported(kind)


def _from_type_v2(func, new_type, args, state) -> Any:
    """Tensor subclasses: ``new_type`` was refused unless it is a stand-in; a plain tensor
    with attributes is its ``func(*args)``."""
    return func(*args) if callable(func) and isinstance(args, tuple) else Unsupported("a tensor")


def _size(sizes: Any = ()) -> tuple[int, ...]:
    """``torch.Size((n, ...))``: a tuple of its sizes, made from nothing else."""
    if not isinstance(sizes, (tuple, list)) or not all(type(n) is int for n in sizes):
        raise refuse("torch.Size", f"with {of_type(sizes)}, not sizes")
    return tuple(sizes)


def _name(call: str) -> Callable[..., str]:
    """``torch.device('cuda', 0)``, ``_get_layout('torch.strided')``: the name, as text."""

    def make(name: Any, index: Any = None) -> str:
        if (
            not isinstance(name, str)
            or len(name) > 64
            or (index is not None and type(index) is not int)
        ):
            raise refuse(call, f"with {of_type(name)}, not a name")
        return name if index is None else f"{name}:{index}"

    return make


def _globals() -> dict[tuple[str, str], Any]:
    functions: dict[tuple[str, str], Callable[..., Any]] = {
        ("torch", "Size"): _size,
        ("torch", "device"): _name("torch.device"),
        ("torch.serialization", "_get_layout"): _name("torch.serialization._get_layout"),
        ("torch._utils", "_rebuild_tensor"): _rebuild_v2,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _from_type_v2,
        ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
        ("torch", "Tensor"): _unsupported("a tensor subclass"),
    }
    for name, kind in _OTHER_KINDS.items():
        functions[("torch._utils", name)] = _unsupported(kind)
    table = {**NUMPY_GLOBALS, **PLAIN_GLOBALS, **safe_pickle.stand_ins(functions)}
    table[("torch.storage", "UntypedStorage")] = table[("torch", "UntypedStorage")] = StorageType(
        None
    )
    for name in (*DTYPES, *OTHER_DTYPES):
        table[("torch", name)] = DType(name)
    for storage, name in {**_BY_STORAGE, **_OTHER_STORAGES}.items():
        table[("torch", storage)] = StorageType(DType(name))
    for name in _INERT:
        table[("torch", name)] = name
    return table


#: (module, name) -> the stand-in an allowed global resolves to
ALLOWED_GLOBALS = _globals()


class Unpickler(RestrictedUnpickler):
    """Resolves only ``ALLOWED_GLOBALS``; persistent ids become ``Storage``s checked by
    ``check_storage(key, nbytes)`` (which knows the file's records)."""

    def __init__(self, file, check_storage: Callable[[str, int], None]) -> None:
        super().__init__(file, ALLOWED_GLOBALS)
        self._check = check_storage
        self._storages: dict[str, Storage] = {}

    def persistent_load(self, pid: Any) -> Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"corrupt pickle: unknown persistent id {str(pid)[:60]}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, StorageType) or not isinstance(key, str):
            raise CheckpointError("corrupt pickle: malformed storage reference")
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError("storage views of the legacy format are not supported")
        dtype = storage_type.dtype or DType("uint8")
        storage = Storage(key, dtype, _int(numel, "a storage size"))
        known = self._storages.setdefault(key, storage)
        if known != storage:
            raise CheckpointError(f"corrupt pickle: storage {key[:40]} declared twice differently")
        self._check(key, storage.nbytes)
        return storage


def loads(file, check_storage: Callable[[str, int], None]) -> Any:
    """Unpickle a ``torch.save`` pickle from ``file`` with the stand-ins (``UnsafePickleError``
    for any other global; ``CheckpointError`` for a malformed or truncated pickle)."""
    return safe_pickle.load(Unpickler(file, check_storage))


# --------------------------------------------------------------------------- writing

_PROTO, _STOP, _MARK, _TUPLE, _REDUCE = b"\x80\x02", b".", b"(", b"t", b"R"
_EMPTY_DICT, _EMPTY_TUPLE, _SETITEMS, _BINPERSID, _FALSE = b"}", b")", b"u", b"Q", b"\x89"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def _number(n: int) -> bytes:
    if 0 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def _tuple(items: Sequence[int]) -> bytes:
    return _MARK + b"".join(_number(i) for i in items) + _TUPLE


def _strides(shape: Sequence[int]) -> list[int]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return strides[::-1]


def dtype_name(dtype: np.dtype) -> str:
    """The torch name of a NumPy dtype the converter carries (``UnsupportedTensorError`` for
    others)."""
    try:
        return _BY_NUMPY[np.dtype(dtype)]
    except KeyError:
        raise UnsupportedTensorError(f"no PyTorch storage for dtype {dtype}") from None


def dumps_state(
    entries: Sequence[tuple[str, tuple[int, ...], np.dtype]], wrapper: str | None
) -> bytes:
    """The pickle ``torch.save`` writes for ``{name: contiguous tensor}`` (``entries``: name,
    shape, dtype; tensor i's bytes in record ``data/i``), nested as ``{wrapper: {...}}``."""
    out = [_PROTO]
    if wrapper:
        out += [_EMPTY_DICT, _str(wrapper)]
    out += [_EMPTY_DICT, _MARK] if entries else [_EMPTY_DICT]
    ordered_dict = _global("collections", "OrderedDict") + _EMPTY_TUPLE + _REDUCE
    for i, (name, shape, dtype) in enumerate(entries):
        storage = DTYPES[dtype_name(dtype)][1]
        numel = int(np.prod(shape, dtype=object))
        pid = _MARK + _str("storage") + _global("torch", storage) + _str(str(i)) + _str("cpu")
        out += [
            _str(name),
            _global("torch._utils", "_rebuild_tensor_v2"),
            _MARK,
            pid + _number(numel) + _TUPLE + _BINPERSID,
            _number(0),
            _tuple(shape),
            _tuple(_strides(shape)),
            _FALSE,
            ordered_dict,
            _TUPLE + _REDUCE,
        ]
    if entries:
        out.append(_SETITEMS)
    if wrapper:
        out.append(b"s")  # SETITEM: {wrapper: inner}
    out.append(_STOP)
    return b"".join(out)


def tensors_of(obj: Any) -> Mapping[str, Any] | None:
    """``obj`` when it is a mapping holding at least one tensor (or unsupported tensor)."""
    if isinstance(obj, Mapping) and any(
        isinstance(v, (TensorRef, Unsupported)) for v in obj.values()
    ):
        return obj
    return None
