"""Reading checkpoint files into a flat ``{key: numpy array}`` dict. Framework-free: PyTorch is
imported only to unpickle ``.pth`` / ``.pt`` / ``.bin`` files; ``.safetensors`` needs none, and
detectron2's ``.pkl`` files (pickled NumPy dicts) go through a restricted unpickler that runs no
code (``weight_convert.detectron2``).

Training checkpoints wrap the weights: microsoft/Swin-Transformer saves ``{'model': sd, 'optimizer':
..., 'epoch': ...}``, mmaction (Video Swin) ``{'meta': ..., 'state_dict': sd}``, DeepSpeed / DDP
``{'module': sd}`` or keys prefixed ``module.``. ``load_state_dict`` unwraps these and reports
what it did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from weight_convert import safetensors_io, torch_pickle, torch_zip
from weight_convert.errors import (
    CheckpointError,
    EmptyFileError,
    MissingFileError,
    NotACheckpointError,
    WrongFormatError,
)
from weight_convert.tensors import LazyTensor, check_dtypes
from weight_convert.torch_pickle import TensorRef, Unsupported

__all__ = [
    "CheckpointError",
    "SUFFIXES",
    "WRAPPER_KEYS",
    "wrapper_keys",
    "load_state_dict",
    "open_state_dict",
    "sniff",
]

#: Keys under which training code nests the weights, tried in this order (then the ``wrapper``
#: of every registered layout: ``wrapper_keys``).
WRAPPER_KEYS = ("state_dict", "model", "module")


def wrapper_keys() -> tuple[str, ...]:
    """``WRAPPER_KEYS`` and the key each registered PyTorch layout nests its ``.pth`` under, so a
    family whose releases nest their weights elsewhere declares it in its layouts module only."""
    from weight_convert import layouts

    declared = [spec.wrapper for spec in layouts.all_layouts() if spec.wrapper]
    return tuple(dict.fromkeys([*WRAPPER_KEYS, *declared]))


_PREFIX = "module."

#: file suffix -> the content it must hold (``sniff``'s names)
SUFFIXES = {
    ".pth": ("torch-zip", "pickle"),
    ".pt": ("torch-zip", "pickle"),
    ".bin": ("torch-zip", "pickle"),
    ".ckpt": ("torch-zip", "pickle"),
    ".safetensors": ("safetensors",),
    ".pkl": ("pickle",),
    ".keras": ("zip",),
    ".weights.h5": ("hdf5",),
    ".msgpack": ("msgpack",),
    ".h5": ("hdf5",),  # keras.applications' legacy weights (weight_convert.keras_applications)
}
_CONTENT = {
    "torch-zip": "a PyTorch zip checkpoint (.pth)",
    "zip": "a zip archive",
    "pickle": "a pickle (.pth of old PyTorch, or detectron2 .pkl)",
    "safetensors": "a safetensors file",
    "hdf5": "an HDF5 file (Keras .weights.h5)",
    "msgpack": "a msgpack file (Flax .msgpack)",
}


def _suffix(path: str) -> str | None:
    name = os.path.basename(path).lower()
    return next((s for s in SUFFIXES if name.endswith(s)), None)


def _safetensors_length(length: int, head: bytes, size: int) -> bool:
    """Whether the first 8 bytes are a safetensors header length: followed by the header's
    ``{`` (the header may be cut short or over the format's bound: ``read_header`` says so) or
    fitting the file (the header may not begin with ``{``: ``read_header`` says so), and under
    2^40 either way: the other formats read here begin with no three zero bytes there."""
    if length >= 1 << 40:
        return False
    return head[8:9] == b"{" or 2 <= length <= size - 8


#: the first opcode of a protocol 0 or 1 pickle of a dict (``(dp0``, ``}q``), a list or an
#: ``OrderedDict`` (``ccollections``): those protocols begin with no ``PROTO`` marker
_OLD_PICKLE_STARTS = b"(}]c"


def _pickle(head: bytes, last: bytes) -> bool:
    """Whether a file is a pickle: ``PROTO`` 0-5 first (protocols 2-5 write it), or, for the
    protocols 0 and 1 of old detectron ``.pkl`` files, a container's first opcode and ``STOP``
    (``.``) as the last byte."""
    if len(head) >= 2 and head[0] == 0x80:
        return head[1] <= 5
    return head[:1] != b"" and head[:1] in _OLD_PICKLE_STARTS and last == b"."


def _content(path: str, size: int) -> str | None:
    """The format the first bytes announce, or None; a zip is told a ``torch.save`` file or
    a Keras one by its member names."""
    with open(path, "rb") as f:
        head = f.read(64)
        f.seek(size - 1)
        last = f.read(1)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            names = torch_zip.zip_names(path)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
        return "torch-zip" if any(n.endswith("/data.pkl") for n in names) else "zip"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if _pickle(head, last):
        return "pickle"
    if len(head) >= 9 and _safetensors_length(int.from_bytes(head[:8], "little"), head, size):
        return "safetensors"
    if head[:1] and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        return "msgpack"
    return None


def sniff(path: str | os.PathLike) -> str:
    """The format of the file at ``path`` ("torch-zip", "pickle", "safetensors", "zip",
    "hdf5", "msgpack"), checked against its suffix.

    Raises ``MissingFileError``, ``EmptyFileError``, ``NotACheckpointError`` (content of no known
    format) or ``WrongFormatError`` (a suffix this tool does not read, or content of another
    format than the suffix says).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "no such file"
        raise MissingFileError(f"no checkpoint file at {path} ({what})")
    size = os.path.getsize(path)
    if size == 0:
        raise EmptyFileError(f"{path} is empty (0 bytes)")
    try:
        content = _content(path, size)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    suffix = _suffix(path)
    if suffix is None:
        found = f"; its content is {_CONTENT[content]}" if content else ""
        raise WrongFormatError(
            f"{path}: unsupported file extension (reads {', '.join(SUFFIXES)}){found}"
        )
    if content is None:
        raise NotACheckpointError(
            f"{path} is not a checkpoint: its first bytes are no known format "
            f"({SUFFIXES[suffix][0]} expected for {suffix})"
        )
    if content not in SUFFIXES[suffix]:
        raise WrongFormatError(
            f"{path}: a {suffix} file should be {_CONTENT[SUFFIXES[suffix][0]]} but this is "
            f"{_CONTENT[content]}: fix the extension"
        )
    return content


def open_state_dict(path: str | os.PathLike) -> tuple[dict[str, LazyTensor], dict[str, Any]]:
    """The flat tensor dict of a PyTorch-side checkpoint (``.pth`` / ``.pt`` / ``.bin``,
    ``.safetensors``, detectron2 ``.pkl``) as ``LazyTensor``s, and what was found on the way.

    Nothing is read but the header / pickle until a tensor is loaded: safetensors tensors are
    read from their byte range, ``.pth`` zips are memory-mapped (``torch.load(mmap=True,
    weights_only=True)``) and each tensor's pages can be released after use.

    ``info`` holds ``format`` ("torch", "torchscript" (a ``torch.jit.save`` archive, read as
    ``torch.jit.load(f).state_dict()``: ``weight_convert.torchscript``), "safetensors" or
    "detectron2-pkl"), ``wrapper`` (the
    nested keys unwrapped, e.g. "state_dict" or "model", or None), ``stripped_prefix``
    ("module." or None), ``ignored`` (non-tensor entries skipped), ``mmap`` (torch) and, for
    safetensors, ``metadata``. A directory is read as a Hugging Face model directory
    (``weight_convert.huggingface.open_directory``: ``format`` "huggingface", ``config``).
    """
    path = os.fspath(path)
    if os.path.isdir(path):  # a Hugging Face model directory: config.json and its weights
        from weight_convert import huggingface

        return huggingface.open_directory(path, open_state_dict)
    content = sniff(path)
    if content in ("zip", "hdf5", "msgpack"):
        raise WrongFormatError(
            f"{path} is {_CONTENT[content]}, not a PyTorch checkpoint (Keras and Flax files are "
            "read by `weight-convert convert`)"
        )
    info: dict[str, Any] = {"format": None, "wrapper": None, "stripped_prefix": None, "ignored": []}
    if content == "safetensors":
        info["format"] = "safetensors"
        tensors, info["metadata"] = safetensors_io.read_lazy(path)
    elif path.lower().endswith(".pkl"):
        info["format"] = "detectron2-pkl"
        tensors = _read_pkl(path, info)
    else:
        info["format"] = "torch"
        tensors = _read_torch(path, info, legacy=content == "pickle")
    if not tensors:
        raise NotACheckpointError(f"no tensors in {path}" + _found(info))
    check_dtypes(tensors, path)
    keys = list(tensors)
    if all(k.startswith(_PREFIX) for k in keys):
        tensors = {k[len(_PREFIX) :]: v for k, v in tensors.items()}
        info["stripped_prefix"] = _PREFIX
    return tensors, info


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``open_state_dict`` with every tensor loaded (NumPy arrays; bfloat16 as
    ``ml_dtypes.bfloat16``)."""
    tensors, info = open_state_dict(path)
    return {k: v.load() for k, v in tensors.items()}, info


def _found(info: Mapping[str, Any]) -> str:
    ignored = info.get("ignored") or []
    return f" (found non-tensor entries {ignored[:5]})" if ignored else ""


# --------------------------------------------------------------------------- torch pickles


def _read_torch(path: str, info: dict[str, Any], legacy: bool) -> dict[str, LazyTensor]:
    """A ``torch.save`` file without PyTorch (``torch_zip``): the pickle's tensors, unwrapped
    from training checkpoints' dicts, as ``LazyTensor``s."""
    obj, archive = torch_zip.read_torch(path, legacy)
    if archive.torchscript:  # obj: the module tree's flat state dict
        info["format"] = "torchscript"
    if not isinstance(obj, Mapping):
        raise NotACheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    chain, keys = [], wrapper_keys()
    while torch_pickle.tensors_of(obj) is None:
        inner = next((k for k in keys if isinstance(obj.get(k), Mapping) and obj.get(k)), None)
        if inner is None:
            break
        info["ignored"] += [f"{'/'.join(chain + [str(k)])}" for k in obj if k != inner]
        chain.append(inner)
        obj = obj[inner]
    info["wrapper"] = "/".join(chain) or None
    if chain and torch_pickle.tensors_of(obj) is None:  # under a wrapper: {'model': {...}}
        obj = _joined_parts(obj, info)
    out = {}
    for key, value in obj.items():
        if isinstance(value, (TensorRef, Unsupported)):
            out[str(key)] = torch_zip.lazy_tensor(archive, value, str(key))
        else:
            info["ignored"].append("/".join(chain + [str(key)]))
    return out


def _joined_parts(obj: Mapping[str, Any], info: dict[str, Any]) -> Mapping[str, Any]:
    """A wrapper's dict of several networks' state dicts (DF-GAN's ``{'model': {'netG': sd,
    'netD': sd, 'netC': sd}}``) as one, each part's name before its keys and each part's
    ``module.`` prefix (from DataParallel) stripped; ``obj`` itself unless it holds two parts or
    more and every dict in it is one."""
    parts = {str(k): v for k, v in obj.items() if torch_pickle.tensors_of(v) is not None}
    dicts = [v for v in obj.values() if isinstance(v, Mapping)]
    if len(parts) < 2 or len(parts) != len(dicts):
        return obj
    joined: dict[str, Any] = {}
    for name, part in parts.items():
        keys = [str(k) for k in part]
        strip = len(_PREFIX) if all(k.startswith(_PREFIX) for k in keys) else 0
        if strip:
            info["stripped_prefix"] = _PREFIX
        for key, value in part.items():
            joined[f"{name}.{str(key)[strip:]}"] = value
    info["ignored"] += [str(k) for k in obj if str(k) not in parts]
    return joined


# --------------------------------------------------------------------------- detectron2 pickles


def _read_pkl(path: str, info: dict[str, Any]) -> dict[str, LazyTensor]:
    """detectron2 pickles hold NumPy arrays: read whole (a pickle cannot be mapped)."""
    from weight_convert.detectron2 import load_pkl  # raises CheckpointError (one line)

    tensors, found = load_pkl(path)
    info["wrapper"] = found.get("wrapper")
    info["ignored"] += list(found.get("ignored", []))
    return {k: LazyTensor(v.shape, v.dtype, lambda v=v: v) for k, v in tensors.items()}
