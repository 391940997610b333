"""Keras files checked before Keras reads them: a ``.keras`` zip's members, the zoo config a file
carries, the HDF5 weights' structure and datasets, and whether those datasets are the model the
config claims. Nothing is built and no tensor is read here: names, declared sizes, shapes, dtypes
and storage layouts only (h5py reads them from the object headers).

What a conversion from a Keras file may then rely on:

- ``.keras``: the members are ``config.json``, ``model.weights.h5`` and ``metadata.json``, stored
  or deflated, each declaring a size within its bound (the JSON ones ``JSON_LIMIT``, the weights
  what the config's model can take, ``weights_bound``) and no more than deflate can give from
  its stored bytes; ``config.json`` names a model of this zoo, built for the input the family
  builds it for, with a valid config (``zoo.configs.config_from_json``).
  ``model.weights.h5`` is read in place when stored (as Keras writes it: the HDF5 opened on its
  bytes in the archive, ``MemberFile``; through ``zipfile`` a backward seek re-reads the member
  from its start, O(n^2)), once each member's local header names it and no member's bytes run
  into another's, the central directory or past the end; a deflated one is inflated into an
  anonymous temporary file first, once the free space there holds its declared size. (A stored
  member's CRC is not checked: that would read it all once more; a ``.weights.h5`` has none.)
- HDF5 (a ``.weights.h5`` or the archive's member): no soft or external links, no object reached
  twice, at most ``MAX_DEPTH`` deep and ``MAX_OBJECTS`` objects; every dataset stored as Keras
  stores it (contiguous or compact, no filter, no external file), its bytes inside the file and
  all of them together no more than the file holds; every dtype a carried floating one
  (``tensors.check_dtypes``; Keras variables of this zoo are floating) but for int32 scalars
  (BatchNorm's ``num_batches_tracked``, ``weight_convert.rules``).
- ``check_shapes``: the datasets' shapes are the config's model's, as multisets of shapes up to
  axis order (a Keras file names no variable, so which dataset is which tensor only the model
  knows: ``port_files.read_keras_weights_h5`` builds it next, now of the file's size).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import os
import shutil
import struct
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from weight_convert.errors import (
    CheckpointError,
    UnsupportedTensorError,
    WrongFormatError,
    WrongModelError,
    first_line,
)
from weight_convert.tensors import BFLOAT16, check_dtypes, is_float
from zoo.config_checks import ConfigError, parse_config_json
from zoo.configs import Config, config_from_dict, family_of, reference_shapes

__all__ = [
    "CONFIG_ATTR",
    "JSON_LIMIT",
    "MAX_DEPTH",
    "MAX_OBJECTS",
    "build_dtype",
    "check_archive",
    "check_shapes",
    "checked_weights",
    "dataset_dtype",
    "open_weights",
    "read_config_attr",
    "weights_bound",
    "weights_datasets",
]

#: HDF5 root attribute of a ``.weights.h5`` holding the zoo config (JSON of ``config_to_dict``)
CONFIG_ATTR = "vit_zoo_config"
#: the members of a ``.keras`` archive of this zoo: required, and allowed
WEIGHTS_MEMBER = "model.weights.h5"
REQUIRED_MEMBERS, MEMBERS = ("config.json", WEIGHTS_MEMBER), ("metadata.json",)
#: the largest ``config.json`` / ``metadata.json`` / config attribute read (real ones: < 2 kB)
JSON_LIMIT = 1 << 20
#: more than deflate can expand (its maximum is about 1032:1): a member declaring more lies
MAX_RATIO = 1100
#: HDF5 bounds: group nesting (Keras files: about 10) and objects visited
MAX_DEPTH, MAX_OBJECTS = 32, 1 << 18
#: bytes a weights file may take beyond its tensors' (HDF5 headers: about 2.5 kB per tensor)
PER_TENSOR_OVERHEAD, FILE_OVERHEAD = 64 << 10, 1 << 20

#: free bytes a deflated ``model.weights.h5`` leaves in the temporary folder it is inflated to
TEMP_MARGIN = 256 << 20

_CONTIGUOUS_OR_COMPACT = (1, 0)  # h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT
_LOCAL_HEADER = 30  # bytes of a zip local file header before the name and the extra field


def weights_bound(config: Config) -> int:
    """The most bytes a ``model.weights.h5`` of ``config``'s model may take: every tensor in
    float64 plus the HDF5 headers around it."""
    shapes = reference_shapes(config)
    values = sum(math.prod(s) for s in shapes.values())
    return 8 * values + PER_TENSOR_OVERHEAD * len(shapes) + FILE_OVERHEAD


# --------------------------------------------------------------------------- the .keras zip


def _member_infos(archive: zipfile.ZipFile, path: str) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    names = [i.filename for i in infos]
    odd = sorted({n for n in names if n not in (*REQUIRED_MEMBERS, *MEMBERS)})
    if odd or len(set(names)) != len(names):
        what = f"members {', '.join(odd)[:200]}" if odd else "a member twice"
        raise CheckpointError(f"{path}: not a .keras file of this zoo: it holds {what}")
    lacking = [n for n in REQUIRED_MEMBERS if n not in names]
    if lacking:
        raise CheckpointError(f"{path}: a .keras file without {', '.join(lacking)}")
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"{path}: {info.filename} is compressed with method {info.compress_type} "
                "(Keras stores its members; deflate is read too)"
            )
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{path}: {info.filename} is encrypted")
        if info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise CheckpointError(
                f"{path}: {info.filename} declares {info.file_size} bytes from "
                f"{info.compress_size} stored: more than deflate can give (a zip bomb?)"
            )
        limit = JSON_LIMIT if info.filename.endswith(".json") else None
        if limit is not None and info.file_size > limit:
            raise CheckpointError(
                f"{path}: {info.filename} declares {info.file_size} bytes (limit {limit})"
            )
    return {i.filename: i for i in infos}


def _zoo_model_config(data: dict[str, Any], path: str) -> Config:
    """The zoo config of a ``config.json`` that names one of this zoo's Keras models."""
    from zoo.registry import FAMILIES

    models = {f.model for f in FAMILIES.values()}
    name = data.get("class_name")
    if name not in models or data.get("registered_name") != f"vit_zoo>{name}":
        shown = str(name)[:100]
        raise WrongFormatError(f"{path} holds a {shown}, not a model of this zoo (ports.keras)")
    inner = data.get("config")
    if not isinstance(inner, dict) or not isinstance(inner.get("config"), dict):
        raise CheckpointError(f"{path}: config.json holds no zoo config")
    try:
        config = config_from_dict(inner["config"])
    except ValueError as e:
        raise CheckpointError(f"{path}: config.json: {e}") from None
    if family_of(config).model != name:
        raise CheckpointError(f"{path}: config.json names {name} but holds a {config.family} one")
    build = data.get("build_config", {}).get("input_shape")
    want = list(family_of(config).port_build_shape(config))
    if build != want:
        raise CheckpointError(
            f"{path}: config.json builds the model for input {str(build)[:100]}, not {want}"
        )
    return config


def check_archive(path: str) -> Config:
    """The validated zoo config of the ``.keras`` file at ``path``, once its members are what
    this zoo's Keras models save (see the module's docstring); ``CheckpointError``,
    ``WrongFormatError`` (a model of no family) otherwise. Reads ``config.json`` only."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = _member_infos(archive, path)
            text = archive.read("config.json")
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt .keras ({first_line(e)})") from None
    try:
        data = parse_config_json(text)
    except ConfigError as e:
        raise CheckpointError(f"{path}: config.json: {e}") from None
    config = _zoo_model_config(data, path)
    bound = weights_bound(config)
    if infos["model.weights.h5"].file_size > bound:
        raise CheckpointError(
            f"{path}: model.weights.h5 declares {infos['model.weights.h5'].file_size} bytes; "
            f"the {family_of(config).model} of its config.json needs at most {bound}"
        )
    return config


# --------------------------------------------------------------------------- HDF5


class MemberFile(io.RawIOBase):
    """A read-only binary file over bytes ``[offset, offset + size)`` of the open file ``raw``:
    what h5py reads a stored ``model.weights.h5`` through, in place. A seek is O(1) (through
    ``zipfile`` a backward seek re-reads the member from its start: minutes for a ViT-H), no
    read leaves the range."""

    def __init__(self, raw: Any, offset: int, size: int) -> None:
        super().__init__()
        self._raw, self._offset, self._size, self._pos = raw, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        if base + pos < 0:
            raise OSError(f"seek to {base + pos}, before the start")
        self._pos = base + pos
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = max(0, min(len(view), self._size - self._pos))
        self._raw.seek(self._offset + self._pos)
        got = 0
        while got < want:
            n = self._raw.readinto(view[got:want])
            if not n:
                break  # the outer file shrank since its size was checked: h5py sees zeros
            got += n
        self._pos += got
        return got


def _local_header(raw: Any, info: zipfile.ZipInfo, where: str) -> tuple[int, int]:
    """(start, end) in the archive of ``info``'s local header and data, from its local header
    (30 bytes, then the name, checked against the central directory's, and the extra field)."""
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER)
    if len(header) < _LOCAL_HEADER or header[:4] != b"PK\x03\x04":
        raise CheckpointError(f"{where}: {info.filename} has no local header at its offset")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    if raw.read(name_length) != info.filename.encode():
        raise CheckpointError(f"{where}: {info.filename}'s local header names another member")
    data = info.header_offset + _LOCAL_HEADER + name_length + extra_length
    return info.header_offset, data + info.compress_size


def _weights_span(archive: zipfile.ZipFile, raw: Any, where: str) -> tuple[int, int]:
    """(offset, size) in the archive of the stored ``model.weights.h5``'s bytes, once every
    member's local header and data lie in the file before the central directory, none
    overlapping another (a member whose bytes are another's, or the directory's, is no file
    Keras writes)."""
    info = archive.getinfo(WEIGHTS_MEMBER)
    if info.compress_size != info.file_size:
        raise CheckpointError(
            f"{where}: {WEIGHTS_MEMBER} is stored as {info.compress_size} bytes but declares "
            f"{info.file_size}"
        )
    spans = sorted((*_local_header(raw, i, where), i.filename) for i in archive.infolist())
    for (_, end, name), (start, _, other) in itertools.pairwise(spans):
        if end > start:
            raise CheckpointError(f"{where}: members {name} and {other} overlap")
    _, last, name = spans[-1]
    size = os.fstat(raw.fileno()).st_size
    if last > min(archive.start_dir, size):
        what = f"the end of the file ({size} bytes)" if last > size else "the central directory"
        raise CheckpointError(f"{where}: {name} runs past {what}")
    end = next(end for _, end, name in spans if name == WEIGHTS_MEMBER)
    return end - info.file_size, info.file_size


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: Any, where: str) -> None:
    """Inflate the deflated ``info`` into the empty temporary file ``out``, once the free
    space in the temporary folder holds its declared size (which ``_member_infos`` bounds by
    ``MAX_RATIO``, ``check_archive`` by the model's); ``zipfile`` stops at that size and checks
    the CRC at the end."""
    folder = tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    if info.file_size + TEMP_MARGIN > free:
        raise CheckpointError(
            f"{where}: {info.filename} is deflated; inflating its {info.file_size} bytes needs "
            f"more than the {free} free in {folder} (TMPDIR)"
        )
    with archive.open(info) as member:
        shutil.copyfileobj(member, out, 1 << 20)
    if out.tell() != info.file_size:
        raise CheckpointError(
            f"{where}: {info.filename} inflates to {out.tell()} bytes, not the "
            f"{info.file_size} it declares"
        )


@contextlib.contextmanager
def _weights_member(path: str) -> Iterator[MemberFile]:
    """The ``model.weights.h5`` of the ``.keras`` archive at ``path`` as a file: a stored one
    (as Keras writes it) read in place (``_weights_span``), a deflated one inflated into an
    anonymous temporary file (gone when closed, or when the process dies; ``_inflate``)."""
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(open(path, "rb", buffering=0))  # reads as HDF5 asks
        archive = stack.enter_context(zipfile.ZipFile(raw))
        info = _member_infos(archive, path)[WEIGHTS_MEMBER]
        if info.compress_type == zipfile.ZIP_STORED:
            yield MemberFile(raw, *_weights_span(archive, raw, path))
        else:
            out = stack.enter_context(tempfile.TemporaryFile())
            _inflate(archive, info, out, path)
            yield MemberFile(out, 0, info.file_size)


@contextlib.contextmanager
def open_weights(path: str, archive: bool) -> Iterator[tuple[Any, int]]:
    """The weights HDF5 of a ``.weights.h5`` or of a ``.keras`` ``archive`` (its
    ``model.weights.h5`` member, ``_weights_member``: read in place when stored, inflated into
    a temporary file when deflated) and its size in bytes; ``CheckpointError`` when HDF5
    cannot open or read it."""
    import h5py

    try:
        with contextlib.ExitStack() as stack:
            if archive:
                member = stack.enter_context(_weights_member(path))
                size = member.seek(0, os.SEEK_END)
                f = stack.enter_context(h5py.File(member, "r"))
            else:
                size = os.path.getsize(path)
                f = stack.enter_context(h5py.File(path, "r"))
            yield f, size
    except (OSError, KeyError, RuntimeError, zipfile.BadZipFile, EOFError) as e:
        message = f"cannot read {path} (truncated or corrupt?): {first_line(e)}"
        raise CheckpointError(message) from None


def _small_attr(obj: Any, name: str, where: str) -> Any:
    """Attribute ``name`` of an HDF5 object (None if absent), refused beyond ``JSON_LIMIT``
    bytes before it is read."""
    if name not in obj.attrs:
        return None
    if obj.attrs.get_id(name).get_storage_size() > JSON_LIMIT:
        raise CheckpointError(f"{where}: attribute {name} is over {JSON_LIMIT} bytes")
    return obj.attrs[name]


def read_config_attr(f: Any, path: str) -> Config | None:
    """The zoo config the root attribute ``CONFIG_ATTR`` of the open HDF5 ``f`` holds,
    validated (``zoo.configs.config_from_json``); None when it has none."""
    from zoo.configs import config_from_json

    text = _small_attr(f, CONFIG_ATTR, path)
    if text is None:
        return None
    try:
        return config_from_json(text if isinstance(text, (str, bytes)) else str(text))
    except ValueError as e:
        raise CheckpointError(f"{path}: unreadable {CONFIG_ATTR} attribute: {e}") from None


def _entries(group: Any, where: str) -> list[tuple[str, Any]]:
    """(name, link) of each link in ``group``, refusing soft and external links."""
    import h5py

    if len(group) > MAX_OBJECTS:
        raise CheckpointError(f"{where}: a group of {len(group)} links")
    out = []
    for name in group:
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            kind = type(link).__name__
            raise CheckpointError(f"{where}: {group.name}/{name} is a {kind} (Keras writes none)")
        out.append((name, group.get(name, getclass=True)))
    return out


def weights_datasets(f: Any, where: str) -> dict[str, Any]:
    """HDF5 path -> dataset of the weights in the open file ``f``, but the optimizer's
    (``save_weights`` of a compiled model stores its state under ``optimizer/``). Walked
    without following links and within ``MAX_DEPTH`` / ``MAX_OBJECTS``; an object reached twice
    (hard links) is refused."""
    import h5py

    found: dict[str, Any] = {}
    seen: set = set()
    stack = [(f, 0)]
    while stack:
        group, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{where}: groups nested over {MAX_DEPTH} deep")
        for name, cls in _entries(group, where):
            if group is f and name == "optimizer":
                continue
            obj = group[name]
            if obj.id in seen or len(seen) >= MAX_OBJECTS:
                raise CheckpointError(f"{where}: {obj.name} is reached twice, or too many objects")
            seen.add(obj.id)
            if cls is h5py.Group:
                stack.append((obj, depth + 1))
            elif cls is h5py.Dataset:
                found[obj.name] = obj
            else:
                raise CheckpointError(f"{where}: {obj.name} is a {cls.__name__}, not a dataset")
    return dict(sorted(found.items()))


def dataset_dtype(dataset: Any) -> np.dtype:
    """The dtype of a weights dataset: Keras writes bfloat16 as opaque 2-byte data marked with
    the attribute ``dtype="bfloat16"``."""
    if dataset.dtype.kind == "V" and dataset.dtype.itemsize == 2:
        if _small_attr(dataset, "dtype", dataset.name) == "bfloat16":
            return BFLOAT16
    return dataset.dtype


def _check_storage(datasets: dict[str, Any], size: int, where: str) -> None:
    """Every dataset stored as Keras stores it, its bytes inside the file, and all of them
    together no more than the file's ``size``."""
    total = 0
    for name, d in datasets.items():
        plist = d.id.get_create_plist()
        if plist.get_layout() not in _CONTIGUOUS_OR_COMPACT or plist.get_nfilters():
            raise CheckpointError(
                f"{where}: dataset {name} is chunked or filtered (Keras writes them contiguous "
                "and uncompressed)"
            )
        if plist.get_external_count():
            raise CheckpointError(f"{where}: dataset {name} is stored in an external file")
        nbytes = math.prod(d.shape or ()) * d.dtype.itemsize
        stored, offset = d.id.get_storage_size(), d.id.get_offset()
        inside = offset is None or offset + stored <= size
        unallocated = offset is None and plist.get_layout() == 1 and nbytes
        if stored != nbytes or not inside or unallocated:
            raise CheckpointError(
                f"{where}: dataset {name} declares {d.shape} ({nbytes} bytes) but the file "
                f"stores {stored} bytes of it" + ("" if inside else " past its end")
            )
        total += nbytes
    if total > size:
        raise CheckpointError(f"{where}: datasets declare {total} bytes in a file of {size}")


def _check_dtypes(datasets: dict[str, Any], where: str) -> list[np.dtype]:
    dtypes = {}
    for name, d in datasets.items():
        try:
            dtypes[name] = dataset_dtype(d)
        except (TypeError, ValueError) as e:  # an HDF5 type with no NumPy equivalent
            raise UnsupportedTensorError(f"{where}: tensor {name[:100]}: {first_line(e)}") from None
    check_dtypes({n: np.empty(0, d) for n, d in dtypes.items()}, where)
    for name, dtype in dtypes.items():
        counter = dtype == np.int32 and datasets[name].shape == ()
        if not is_float(dtype) and not counter:
            raise UnsupportedTensorError(
                f"{where}: tensor {name[:100]} has dtype {dtype}; the Keras model's variables are "
                "floating but for int32 scalar counters (Keras would cast it silently)"
            )
    return [d for d in dtypes.values() if is_float(d)]


def build_dtype(dtypes: list[np.dtype]) -> str:
    """The dtype to build the model in so that it holds every value exactly: the one floating
    dtype of the file, else the widest (float32 for float16 beside bfloat16)."""
    names = {np.dtype(d).name if np.dtype(d) != BFLOAT16 else "bfloat16" for d in dtypes}
    for wide in ("float64", "float32"):
        if wide in names:
            return wide
    return names.pop() if len(names) == 1 else "float32"


def check_shapes(config: Config, datasets: dict[str, Any], where: str, claim: str) -> None:
    """``WrongModelError`` unless the datasets have the shapes of ``config``'s model, as
    multisets of shapes up to axis order (port kernels are transposed)."""
    want = reference_shapes(config)
    have = Counter(tuple(sorted(d.shape)) for d in datasets.values())
    lacking = Counter(tuple(sorted(s)) for s in want.values()) - have
    extra = have - Counter(tuple(sorted(s)) for s in want.values())
    if not lacking and not extra:
        return
    model = family_of(config).model
    example = next((f"{k} {s}" for k, s in want.items() if tuple(sorted(s)) in lacking), None)
    found = sum(math.prod(d.shape or ()) for d in datasets.values())
    raise WrongModelError(
        f"{where}: the file's weights are not the {model} {claim}: it holds {len(datasets)} "
        f"tensors of {found:,} values, that model {len(want)} of "
        f"{sum(math.prod(s) for s in want.values()):,}"
        + (f"; none of the file's is the shape of {example}" if example else "")
        + (f"; {sum(extra.values())} of the file's fit no tensor of it" if extra else "")
    )


def checked_weights(
    path: str, config: Config | None = None, variant: Config | None = None
) -> tuple[Config, str]:
    """Check a ``.keras`` (``.keras`` suffix) or ``.weights.h5`` file before any model is built
    (see the module's docstring). Returns the config (``config`` if given, else the file's: the
    archive's ``config.json`` or the ``CONFIG_ATTR`` attribute, else ``variant``'s) and the
    dtype to build the model in (``build_dtype``). ``UsageError`` when a bare ``.weights.h5``
    names no model and neither is given."""
    from weight_convert.errors import UsageError

    archive = path.lower().endswith(".keras")
    claim = "the given config describes"
    if config is None and archive:
        config, claim = check_archive(path), "its config claims"
    elif archive:
        check_archive(path)
    with open_weights(path, archive) as (f, size):
        if config is None:
            config, claim = read_config_attr(f, path), "its config claims"
        if config is None:
            if variant is None:
                raise UsageError(
                    f"{path} holds Keras weights without naming their model: give --variant NAME"
                )
            config, claim = variant, "--variant names"
        datasets = weights_datasets(f, path)
        dtype = build_dtype(_check_dtypes(datasets, path))
        _check_storage(datasets, size, path)
        check_shapes(config, datasets, path, claim)
    return config, dtype
