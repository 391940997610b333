"""``torch.save`` checkpoints read and written without PyTorch, every read bounded. Framework-free
(NumPy and the standard library's ``zipfile``).

Reading (``read_torch``): the zip's central directory is sized before it is parsed, and no two
records may share a name (ignoring case, as PyTorch's reader compares them); ``data.pkl``
must be a stored (uncompressed) record within ``PICKLE_LIMIT`` bytes, and is unpickled with the
stand-ins of ``torch_pickle`` (nothing from the file runs). Each storage's record must hold
exactly the bytes its persistent id declares, each tensor must lie inside its storage, and a
tensor's bytes are read only on ``load()``, and only the span its view covers (``os.preadv``
into a fresh array, in chunks). Each record's CRC-32 is checked once, before its bytes are
used: as they come when a tensor reads the whole record, else by one pass that keeps nothing.
So one tensor's span is in memory at a time, and the time is one pass per record plus the
spans, whatever the file claims (views of one huge storage included). The pre-zip format of
PyTorch < 1.6 (a sequence of pickles followed by the storages' bytes) is read the same way.
A TorchScript archive (``torch.jit.save``: a ``constants.pkl`` next to ``data.pkl``, as
``torch.load`` tells them) is the same zip; its ``data.pkl`` is a module tree, which
``weight_convert.torchscript`` reads into its flat state dict (its ``code/`` records, deflated,
are inflated within a bound and only their class declarations read).

Writing (``write_pth``): the pickle of ``{name: tensor}`` from names, shapes and dtypes
(``torch_pickle.dumps_state``), then each tensor's bytes streamed into its ``data/<i>`` record,
stored and 64-byte aligned as ``torch.save`` lays them out, so ``torch.load(mmap=True)`` reads
the result as any other.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weight_convert import torch_pickle
from weight_convert.errors import CheckpointError, NotACheckpointError, UnsupportedTensorError
from weight_convert.progress import Progress
from weight_convert.tensors import LazyTensor, release
from weight_convert.torch_pickle import TensorRef, Unsupported

if TYPE_CHECKING:
    from weight_convert.writers import Tensors

__all__ = ["PICKLE_LIMIT", "lazy_tensor", "read_torch", "write_pth", "zip_names"]

#: the largest ``data.pkl`` read (a state dict's pickle takes ~150 bytes per tensor)
PICKLE_LIMIT = 64 << 20
#: the largest zip central directory read (``torch.save`` writes ~100 bytes per tensor)
DIRECTORY_LIMIT = 64 << 20
_CHUNK = 16 << 20
_CRC_CHUNK = 4 << 20  # the buffer of a CRC pass over a record read in part
_ALIGN = 64  # torch.save's storage alignment


@dataclass(frozen=True)
class Record:
    name: str
    offset: int  # of the data
    size: int  # stored bytes
    crc: int | None  # None: the legacy format, which has none
    inflated: int | None = None  # a deflated record's declared size (only ``code/`` records)


class Archive:
    """The records of a ``torch.save`` zip (or the storages of a legacy file) at ``path``,
    each checked to lie inside the file."""

    def __init__(self, path: str, records: dict[str, Record], big_endian: bool = False) -> None:
        self.path, self.records, self.big_endian = path, records, big_endian
        self.torchscript = False  # a ``torch.jit.save`` archive (``weight_convert.torchscript``)
        self._verified: set[str] = set()  # records whose CRC-32 was checked

    def check_storage(self, key: str, nbytes: int) -> None:
        record = self.records.get(key)
        if record is None:
            raise CheckpointError(f"{self.path}: corrupt: no record for storage {key[:40]}")
        if record.size != nbytes:
            raise CheckpointError(
                f"{self.path}: corrupt: record data/{key[:40]} holds {record.size} bytes, its "
                f"tensor declares {nbytes}"
            )

    def read(self, record: Record, out: memoryview, at: int = 0) -> None:
        """``len(out)`` bytes of ``record`` from its byte ``at`` into ``out``. The record's CRC-32
        is checked once, on its first read: as the bytes come when ``out`` takes all of them,
        else by a pass over the record that keeps nothing."""
        check = record.crc is not None and record.name not in self._verified
        whole = at == 0 and len(out) == record.size
        if check and not whole:
            self._check(record)
        crc = self._pread(record, at, out, check and whole)
        if check and whole:
            self._verify(record, crc)

    def _pread(self, record: Record, at: int, out: memoryview, crc: bool) -> int:
        """Fill ``out`` from the record's byte ``at``; the CRC-32 of what was read (if ``crc``)."""
        value, done = 0, 0
        with open(self.path, "rb") as f:
            while done < len(out):
                view = out[done : done + _CHUNK]
                n = os.preadv(f.fileno(), [view], record.offset + at + done)
                if n == 0:
                    raise CheckpointError(
                        f"{self.path}: truncated while reading {record.name[:80]}"
                    )
                if crc:
                    value = zlib.crc32(view[:n], value)
                done += n
        return value

    def text(self, record: Record, limit: int) -> bytes:
        """The bytes of a small record, stored or deflated (a ``code/`` record), CRC-checked:
        ``CheckpointError`` when it declares or inflates to more than ``limit`` bytes (a zip
        bomb is refused after ``limit`` bytes of output, whatever it declares)."""
        size = record.size if record.inflated is None else record.inflated
        if size > limit or record.size > limit + (1 << 20):
            raise CheckpointError(
                f"refused: record {record.name[:80]} of {size} bytes (limit {limit >> 20} MiB)"
            )
        raw = memoryview(bytearray(record.size))
        self._pread(record, 0, raw, False)
        if record.inflated is None:
            data = bytes(raw)
        else:
            inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                data = inflate.decompress(raw, limit + 1)
            except zlib.error as e:
                raise CheckpointError(
                    f"corrupt zip: record {record.name[:80]} does not inflate ({e})"
                ) from None
            if len(data) > limit:
                raise CheckpointError(
                    f"refused: record {record.name[:80]} inflates beyond {limit >> 20} MiB "
                    f"(it declares {record.inflated} bytes)"
                )
            if not inflate.eof or len(data) != record.inflated:
                raise CheckpointError(
                    f"corrupt zip: record {record.name[:80]} inflates to {len(data)} bytes, "
                    f"not the {record.inflated} it declares"
                )
        self._verify(record, zlib.crc32(data))
        return data

    def _check(self, record: Record) -> None:
        """The record's CRC-32, from its bytes read in chunks into one reused buffer."""
        buffer, crc = memoryview(bytearray(min(record.size, _CRC_CHUNK))), 0
        for at in range(0, record.size, _CRC_CHUNK):
            view = buffer[: min(_CRC_CHUNK, record.size - at)]
            self._pread(record, at, view, False)
            crc = zlib.crc32(view, crc)
        self._verify(record, crc)

    def _verify(self, record: Record, crc: int) -> None:
        if crc != record.crc:
            raise CheckpointError(
                f"{self.path}: corrupt: record {record.name[:80]} fails its CRC-32 check"
            )
        self._verified.add(record.name)


def lazy_tensor(archive: Archive, ref: TensorRef | Unsupported, key: str) -> LazyTensor:
    """The ``LazyTensor`` of a tensor of the pickle (``UnsupportedTensorError`` for a kind or
    dtype the converter does not take). Loading reads only the bytes its view spans (from its
    offset to its last element), however big its storage: one tensor's span in memory."""
    where = f"{archive.path}: tensor {key[:100]}"
    if isinstance(ref, Unsupported):
        raise UnsupportedTensorError(f"{where} is {ref.kind}: only dense tensors are converted")
    dtype = ref.dtype.numpy
    if dtype is None:
        raise UnsupportedTensorError(
            f"{where} has dtype {ref.dtype.name}, which the model does not compute in"
        )

    def load() -> np.ndarray:
        if 0 in ref.shape:
            return np.empty(ref.shape, dtype)
        last = sum((n - 1) * s for n, s in zip(ref.shape, ref.strides, strict=True))
        raw = np.empty((last + 1) * dtype.itemsize, np.uint8)
        record = archive.records[ref.storage.key]
        archive.read(record, memoryview(raw), ref.offset * dtype.itemsize)
        flat = raw.view(dtype.newbyteorder(">") if archive.big_endian else dtype)
        strides = [s * dtype.itemsize for s in ref.strides]
        view = np.lib.stride_tricks.as_strided(flat, ref.shape, strides, writeable=False)
        if view.flags.c_contiguous and view.size == flat.size:  # the span is the tensor
            array = flat.reshape(ref.shape)
            return array.byteswap(inplace=True).view(dtype) if archive.big_endian else array
        return np.array(view, dtype=dtype)  # a contiguous copy, in native byte order

    return LazyTensor(ref.shape, dtype, load)


# --------------------------------------------------------------------------- the zip format


def _directory(f, size: int) -> tuple[int, int, int]:
    """(entries, size, offset) of the central directory, from the end record (ZIP64 too)."""
    tail_len = min(size, 65557)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise CheckpointError("truncated or corrupt zip (no end of central directory)")
    entries, cd_size, cd_offset = struct.unpack("<HII", tail[at + 10 : at + 20])
    if 0xFFFF in (entries,) or 0xFFFFFFFF in (cd_size, cd_offset):
        locator = tail[at - 20 : at] if at >= 20 else b""
        if not locator.startswith(b"PK\x06\x07"):
            raise CheckpointError("truncated or corrupt zip (no ZIP64 locator)")
        (end64,) = struct.unpack("<Q", locator[8:16])
        f.seek(end64)
        record = f.read(56)
        if len(record) < 56 or not record.startswith(b"PK\x06\x06"):
            raise CheckpointError("truncated or corrupt zip (no ZIP64 end record)")
        entries, cd_size, cd_offset = struct.unpack("<QQQ", record[32:56])
    if cd_offset + cd_size > size:
        raise CheckpointError("truncated or corrupt zip (its directory lies past the end)")
    if cd_size > DIRECTORY_LIMIT or entries > DIRECTORY_LIMIT // 46:
        raise CheckpointError(
            f"refused: a zip directory of {entries} entries / {cd_size} bytes (limit "
            f"{DIRECTORY_LIMIT >> 20} MiB): not a checkpoint torch.save wrote"
        )
    return entries, cd_size, cd_offset


def _record(f, info: zipfile.ZipInfo, end: int, deflated: bool = False) -> Record:
    """Where ``info``'s data lies, checked: stored (not compressed; ``deflated``: or deflated,
    as ``torch.jit.save`` writes ``code/``), inside the file before the central directory."""
    inflated = None
    if deflated and info.compress_type == zipfile.ZIP_DEFLATED:
        inflated = info.file_size
    elif info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise CheckpointError(
            f"refused: record {info.filename[:80]} is compressed (torch.save stores every "
            "record as it is; a compressed one could expand without bound)"
        )
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) < 30 or not local.startswith(b"PK\x03\x04"):
        raise CheckpointError(f"truncated or corrupt zip (record {info.filename[:80]})")
    names, extra = struct.unpack("<HH", local[26:30])
    offset = info.header_offset + 30 + names + extra
    if offset + info.compress_size > end:
        raise CheckpointError(
            f"truncated or corrupt zip (record {info.filename[:80]} runs past its space)"
        )
    return Record(info.filename, offset, info.compress_size, info.CRC, inflated)


def _infos(f) -> list[zipfile.ZipInfo]:
    """The records of the zip ``f`` (its directory sized first), each name once: two records
    whose names match ignoring case (as PyTorch's zip reader matches them) are refused, since
    readers may take different ones."""
    _directory(f, os.fstat(f.fileno()).st_size)
    try:
        infos = zipfile.ZipFile(f).infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"truncated or corrupt zip ({str(e)[:120]})") from None
    seen: set[str] = set()
    for info in infos:
        name = info.filename.casefold()
        if name in seen:
            raise CheckpointError(
                f"corrupt zip: two records named {info.filename[:80]} (ignoring case): readers "
                "may take either"
            )
        seen.add(name)
    return infos


def zip_names(path: str) -> list[str]:
    """The member names of the zip at ``path`` (``CheckpointError`` when it is truncated or
    corrupt, or names a record twice)."""
    with open(path, "rb") as f:
        return [info.filename for info in _infos(f)]


def _read_zip(path: str) -> tuple[Any, Archive]:
    with open(path, "rb") as f:
        _, _, directory_at = _directory(f, os.path.getsize(path))
        infos = _infos(f)
        pickles = [i for i in infos if i.filename.endswith("/data.pkl")]
        if len(pickles) != 1:
            if any(i.filename.endswith("/model.json") for i in infos):
                raise NotACheckpointError(
                    f"{path} is a TorchScript archive of PyTorch < 1.4 (model.json), which is "
                    "not read: save it again with torch.jit.save"
                )
            raise NotACheckpointError(f"{path} is a zip but no torch.save checkpoint (data.pkl)")
        prefix = pickles[0].filename[: -len("data.pkl")]
        # torch.load's own test for a TorchScript archive (torch.jit.save writes constants.pkl)
        script = any(i.filename == prefix + "constants.pkl" for i in infos)
        records, meta, code = {}, {}, {}
        for info in infos:
            name = info.filename[len(prefix) :] if info.filename.startswith(prefix) else None
            if name is not None and name.startswith("data/"):
                records[name[5:]] = _record(f, info, directory_at)
            elif name in ("data.pkl", "byteorder"):
                meta[name] = _record(f, info, directory_at)
            elif script and name is not None and name.startswith("code/") and name.endswith(".py"):
                code[name[5:]] = _record(f, info, directory_at, deflated=True)
    pickled = meta["data.pkl"]
    if pickled.size > PICKLE_LIMIT:
        raise CheckpointError(
            f"refused: data.pkl of {pickled.size} bytes (limit {PICKLE_LIMIT >> 20} MiB)"
        )
    archive = Archive(path, records)
    order = meta.get("byteorder")
    if order is not None:
        text = _small(archive, order)
        if text not in (b"little", b"big"):
            raise CheckpointError(f"{path}: corrupt byteorder record {text[:20]!r}")
        archive.big_endian = text == b"big"
    data = _small(archive, pickled)
    if script:
        from weight_convert import torchscript

        archive.torchscript = True
        return torchscript.state_dict(archive, data, code), archive
    return torch_pickle.loads(io.BytesIO(data), archive.check_storage), archive


def _small(archive: Archive, record: Record) -> bytes:
    buffer = bytearray(min(record.size, PICKLE_LIMIT))
    archive.read(record, memoryview(buffer))
    return bytes(buffer)


# --------------------------------------------------------------------------- the legacy format

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class _Bounded:
    """A file read no further than its end, whatever size a pickle opcode declares."""

    def __init__(self, f, size: int) -> None:
        self._f, self._size = f, size

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._size - self._f.tell())
        return self._f.read(left if n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self._f.readline(1 << 16)

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)


def _read_legacy(path: str) -> tuple[Any, Archive]:
    """PyTorch < 1.6's format: pickles of a magic number, the protocol, system info, the object,
    the storage keys, then each storage as an 8-byte element count and its bytes."""
    size = os.path.getsize(path)
    declared: dict[str, int] = {}

    def note(key: str, nbytes: int) -> None:
        declared[key] = nbytes

    with open(path, "rb") as raw:
        f = _Bounded(raw, size)
        head = [torch_pickle.loads(f, note) for _ in range(2)]
        if head != [_LEGACY_MAGIC, _LEGACY_PROTOCOL]:
            raise NotACheckpointError(f"{path} is a pickle but no torch.save checkpoint")
        torch_pickle.loads(f, note)  # system info
        obj = torch_pickle.loads(f, note)
        keys = torch_pickle.loads(f, note)
        if (
            not isinstance(keys, list)
            or not all(isinstance(k, str) for k in keys)
            or sorted(keys) != sorted(declared)
        ):
            raise CheckpointError(f"{path}: corrupt storage list")
        offset, records = raw.tell(), {}
        for key in keys:
            nbytes = declared[key]
            records[key] = Record(key, offset + 8, nbytes, None)
            offset += 8 + nbytes
            if offset > size:
                raise CheckpointError(f"{path}: truncated (storage {key[:40]} runs past the end)")
    return obj, Archive(path, records)


def read_torch(path: str, pickle_format: bool) -> tuple[Any, Archive]:
    """The unpickled object of a ``.pth`` (tensors as ``TensorRef``) and its ``Archive``;
    ``pickle_format``: the legacy (non-zip) format."""
    try:
        return _read_legacy(path) if pickle_format else _read_zip(path)
    except CheckpointError as e:
        text = str(e)
        if not text.startswith(path):
            raise type(e)(f"{path}: {text}") from None
        raise


# --------------------------------------------------------------------------- writing


def _add(zf: zipfile.ZipFile, f, name: str, size: int) -> Any:
    """Open a stored record ``name`` of ``size`` bytes whose data starts 64-byte aligned."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size
    header = 30 + len(name.encode()) + 20  # + the ZIP64 extra field forced below
    pad = (-(f.tell() + header + 4)) % _ALIGN
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    handle = zf.open(info, "w", force_zip64=True)
    if f.tell() % _ALIGN:
        raise RuntimeError(f"record {name} is not {_ALIGN}-byte aligned")
    return handle


def write_pth(
    out: Path,
    items: list[tuple[str, str, Any]],
    tensors: Tensors,
    wrapper: str | None,
    progress: Progress,
) -> None:
    """Write ``(name, key, value)`` items as ``torch.save``'s zip of ``{name: tensor}`` (nested
    under ``wrapper`` when given), one tensor in memory at a time: the pickle first (it needs
    only shapes and dtypes), then record ``data/i`` for item i. Not atomic: write to a staging
    path (``outputs.atomic``)."""
    entries = [(name, tuple(value.shape), tensors.out_dtype(value)) for name, _, value in items]
    pickled = torch_pickle.dumps_state(entries, wrapper)
    prefix = "archive/"
    with open(out, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        with _add(zf, f, prefix + "data.pkl", len(pickled)) as record:
            record.write(pickled)
        for name, text in ((".format_version", b"1"), (".storage_alignment", b"64")):
            zf.writestr(prefix + name, text)
        zf.writestr(prefix + "byteorder", b"little")
        for i, (_, key, value) in enumerate(progress.track(items, "write")):
            array = np.require(tensors(key, value), requirements="C")
            with _add(zf, f, f"{prefix}data/{i}", array.nbytes) as record:
                record.write(memoryview(array.reshape(-1).view(np.uint8)))
            release(value)
        zf.writestr(prefix + "version", b"3\n")
    tensors.check()
