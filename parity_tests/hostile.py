"""Hostile files. Pickles whose payloads use only the globals a pickle of arrays or a
``torch.save`` state dict may name (``_codecs.encode``, ``bytearray``, ``numpy.ndarray``,
``torch.device``, ...) to allocate without bound, hand over uninitialised memory, crash NumPy or
change a tensor record after it was checked, in the detectron2 ``.pkl`` / ``torch.save`` ``.pth``
files that carry them; zips naming a record twice; tensors viewing one huge storage.
test_bad_pth.py, test_bad_pickles.py and test_pth_views.py feed them to the CLI."""

from __future__ import annotations

import codecs
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy < 1.26
    from numpy.core.multiarray import _reconstruct


class Call:
    """Pickles as ``func(*args)`` (and, with ``state``, a BUILD of ``state`` on the result)."""

    def __init__(self, func, *args: Any, state: Any = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        if self.state is None:
            return (self.func, self.args)
        return (self.func, self.args, self.state)


def hex_bomb(levels: int = 30) -> Call:
    """``codecs.encode(codecs.encode(...(b'a', 'hex')...), 'hex')``: 2**levels bytes from a
    pickle of ~30 bytes a level (1 GiB at 30)."""
    value: Any = b"a"
    for _ in range(levels):
        value = Call(codecs.encode, value, "hex")
    return value


def short_object_array(n: int = 10**8) -> Call:
    """An object array declaring ``n`` elements whose data is a one-item list: NumPy's own
    ``ndarray.__setstate__`` reads past the list (a segfault)."""
    state = (1, (n,), np.dtype(object), False, [1])
    return Call(_reconstruct, np.ndarray, (0,), b"b", state=state)


def memo_bomb(data: bytes, index: int = (1 << 27) - 1) -> bytes:
    """``data`` (a protocol 2 pickle) with a memo entry stored at ``index`` first: CPython's
    unpickler sizes its memo table by the largest index (2 GiB at 2**27)."""
    assert data.startswith(b"\x80\x02")
    return data[:2] + b"K\x01r" + struct.pack("<I", index) + b"0" + data[2:]


def opcode_flood(data: bytes, n: int = 8 << 20) -> bytes:
    """``data`` with a list of ``n`` empty dicts pushed and dropped first: one byte of pickle
    each, ~80 bytes of memory each."""
    assert data.startswith(b"\x80\x02")
    return data[:2] + b"(" + b"}" * n + b"l0" + data[2:]


# --------------------------------------------------------------------------- the files


def pkl_with(d: Path, name: str, weights: dict, protocol: int = 2, **extra: Any) -> Path:
    """A detectron2 ``.pkl`` of ``{"model": weights, **extra}``."""
    path = d / name
    path.write_bytes(pickle.dumps({"model": weights, **extra}, protocol=protocol))
    return path


def pth_with(good: Path, d: Path, name: str, **extra: Any) -> Path:
    """``good``'s state dict saved by ``torch.save`` as ``{"model": sd, **extra}``."""
    sd = torch.load(good, weights_only=True)["model"]
    torch.save({"model": sd, **extra}, d / name)
    return d / name


def pth_edited(good: Path, d: Path, name: str, edit) -> Path:
    """``good`` with its ``data.pkl`` replaced by ``edit(data.pkl)`` (sound CRCs)."""
    out = d / name
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = edit(data)
            zout.writestr(info.filename, data)
    return out


def duplicate_member(good: Path, d: Path, name: str, second: str) -> Path:
    """``good`` with a second record named ``second`` (a spelling of ``data/0``) after its
    ``data/0``, holding other bytes of the same size."""
    out = d / name
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info.filename, data)
            if info.filename.endswith("/data/0"):
                prefix = info.filename[: -len("data/0")]
                with warnings.catch_warnings():  # zipfile warns of the duplicate
                    warnings.simplefilter("ignore")
                    zout.writestr(prefix + second, bytes(len(data)))
    return out


class _SparseWriter:
    """A file ``torch.save`` writes into, each 1 MiB run of zeros left as a hole."""

    _RUN = 1 << 20

    def __init__(self, path: Path) -> None:
        self._f = open(path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        for at in range(0, len(view), self._RUN):
            run = view[at : at + self._RUN]
            if len(run) == self._RUN and not np.frombuffer(run, np.uint64).any():
                self._f.seek(len(run), 1)
            else:
                self._f.write(run)
        return len(view)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.truncate(self._f.tell())
        self._f.close()


def views_of_one_storage(good: Path, d: Path, nbytes: int = 512 << 20) -> Path:
    """``good``'s float tensors as views into one float32 storage of ``nbytes`` (2-D ones
    transposed views, so their strides are not contiguous), the rest of it zeros left as holes:
    ~1 MB on disk."""
    sd = torch.load(good, weights_only=True)["model"]
    base = torch.from_numpy(np.zeros(nbytes // 4, np.float32))  # calloc: pages untouched
    state, at = {}, 0
    for key, value in sd.items():
        if value.dtype != torch.float32:
            state[key] = value
            continue
        flat = value.t() if value.ndim == 2 else value
        base[at : at + value.numel()] = flat.contiguous().reshape(-1)
        view = base[at : at + value.numel()].view(flat.shape)
        state[key] = view.t() if value.ndim == 2 else view
        at += value.numel()
    assert all(torch.equal(state[k], sd[k]) for k in sd)
    writer = _SparseWriter(d / "views.pth")
    try:
        torch.save({"model": state}, writer)
    finally:
        writer.close()
    return d / "views.pth"


# --------------------------------------------------------------------------- .pth rows

#: one byte of a pickled 1 MiB string, referred to 1024 times: ``str()`` of the list is 1 GiB
_MIB_TEXT = "x" * (1 << 20)


def pth_hex_bomb(good, d):
    return pth_with(good, d, "hex.pth", note=hex_bomb(30))


def pth_bytearray(good, d):
    return pth_with(good, d, "bytearray.pth", buffer=Call(bytearray, 1 << 30))


def pth_device_of_list(good, d):
    return pth_with(good, d, "device.pth", device=Call(torch.device, [_MIB_TEXT] * 1024))


def pth_size_of_array(good, d):
    """``torch.Size(array)``: a tuple of one NumPy scalar (~40 bytes) per byte of the array."""
    return pth_with(good, d, "size.pth", size=Call(torch.Size, np.zeros(1 << 24, np.uint8)))


def pth_uninitialised(good, d):
    return pth_with(good, d, "uninit.pth", extra=Call(np.ndarray, (64, 64), "<f4"))


def pth_short_object_array(good, d):
    return pth_with(good, d, "objects.pth", extra=short_object_array())


def pth_memo_bomb(good, d):
    return pth_edited(good, d, "memo.pth", memo_bomb)


def pth_opcode_flood(good, d):
    return pth_edited(good, d, "flood.pth", opcode_flood)


def pth_tensor_moved(good, d):
    """``head.bias`` rebuilt, then a BUILD that moves its offset 2 elements past where its
    bounds were checked: its last two values would come from beyond its storage."""
    sd = torch.load(good, weights_only=True)["model"]
    func, args = sd["head.bias"].__reduce_ex__(2)
    sd["head.bias"] = Call(func, *args, state={"offset": 2})
    torch.save({"model": sd}, d / "moved.pth")
    return d / "moved.pth"


def pth_duplicate(good, d):
    return duplicate_member(good, d, "dup.pth", "data/0")


def pth_duplicate_case(good, d):
    """``DATA/0`` besides ``data/0``: PyTorch's zip reader matches names ignoring case."""
    return duplicate_member(good, d, "case.pth", "DATA/0")


# --------------------------------------------------------------------------- .pkl rows


def _pkl_edit(good: Path, d: Path, name: str, edit) -> Path:
    """``good`` (a detectron2 pickle this suite wrote) with its dict edited by ``edit``."""
    with open(good, "rb") as f:
        data = pickle.load(f)  # noqa: S301 - the suite's own file
    edit(data)
    (d / name).write_bytes(pickle.dumps(data, protocol=2))
    return d / name


def pkl_hex_bomb(good, d):
    return _pkl_edit(good, d, "hex.pkl", lambda data: data.update(__author__=hex_bomb(30)))


def pkl_uninitialised(good, d):
    """One weight an uninitialised ``numpy.ndarray(shape, dtype)`` of its shape: whatever the
    heap held, converted as the weight."""

    def edit(data):
        key = next(k for k in data["model"] if k.endswith("pos_embed"))
        shape = data["model"][key].shape
        data["model"][key] = Call(np.ndarray, shape, "<f4")

    return _pkl_edit(good, d, "uninit.pkl", edit)


def pkl_short_object_array(good, d):
    return _pkl_edit(good, d, "objects.pkl", lambda data: data.update(extra=short_object_array()))


def pkl_short_array(good, d):
    """A float32 array of shape (64, 64) whose state holds 4 bytes of data."""
    state = (1, (64, 64), np.dtype("<f4"), False, b"\0" * 4)
    call = Call(_reconstruct, np.ndarray, (0,), b"b", state=state)
    return _pkl_edit(good, d, "short.pkl", lambda data: data.update(extra=call))


def pkl_memo_bomb(good, d):
    path = _pkl_edit(good, d, "memo.pkl", lambda data: None)
    path.write_bytes(memo_bomb(path.read_bytes()))
    return path


def pkl_opcode_flood(good, d):
    path = _pkl_edit(good, d, "flood.pkl", lambda data: None)
    path.write_bytes(opcode_flood(path.read_bytes()))
    return path
