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

import json
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["CheckpointError", "WRAPPER_KEYS", "load_state_dict"]

#: Keys under which training code nests the weights, tried in this order.
WRAPPER_KEYS = ("state_dict", "model", "module")
_PREFIX = "module."


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or holds no tensors (message: one line)."""


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The flat tensor dict of a checkpoint file and what was found on the way.

    ``info`` holds ``format`` ("torch", "safetensors" or "detectron2-pkl"), ``wrapper`` (the
    nested keys unwrapped, e.g. "state_dict" or "model", or None), ``stripped_prefix``
    ("module." or None), ``ignored`` (non-tensor entries skipped), ``converted``
    ({key: "bfloat16->float32"} for tensors NumPy cannot hold as they are) and, for safetensors,
    ``metadata``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint file at {path}")
    info: dict[str, Any] = {
        "format": None,
        "wrapper": None,
        "stripped_prefix": None,
        "ignored": [],
        "converted": {},
    }
    if path.endswith(".safetensors"):
        info["format"] = "safetensors"
        tensors, info["metadata"] = _read_safetensors(path, info["converted"])
    elif path.endswith(".pkl"):
        info["format"] = "detectron2-pkl"
        tensors = _read_pkl(path, info)
    else:
        info["format"] = "torch"
        tensors = _read_torch(path, info)
    if not tensors:
        raise CheckpointError(f"no tensors in {path}" + _found(info))
    keys = list(tensors)
    if all(k.startswith(_PREFIX) for k in keys):
        tensors = {k[len(_PREFIX) :]: v for k, v in tensors.items()}
        info["stripped_prefix"] = _PREFIX
    return tensors, info


def _found(info: Mapping[str, Any]) -> str:
    ignored = info.get("ignored") or []
    return f" (found non-tensor entries {ignored[:5]})" if ignored else ""


# --------------------------------------------------------------------------- torch pickles


def _read_torch(path: str, info: dict[str, Any]) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is there wherever .pth files are made
        raise CheckpointError(f"reading {path} needs PyTorch ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is one user-facing error
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {first}") from None
    if isinstance(obj, torch.Tensor) or not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    chain = []
    while not _has_tensors(obj, torch):
        inner = next(
            (k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping) and obj.get(k)), None
        )
        if inner is None:
            break
        info["ignored"] += [f"{'/'.join(chain + [k])}" for k in obj if k != inner]
        chain.append(inner)
        obj = obj[inner]
    info["wrapper"] = "/".join(chain) or None
    out = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            out[str(key)] = _tensor_to_numpy(torch, str(key), value, info["converted"])
        else:
            info["ignored"].append("/".join(chain + [str(key)]))
    return out


def _has_tensors(obj: Mapping, torch) -> bool:
    return any(isinstance(v, torch.Tensor) for v in obj.values())


def _tensor_to_numpy(torch, key: str, value, converted: dict[str, str]) -> np.ndarray:
    value = value.detach().cpu()
    try:
        return value.numpy()
    except TypeError:  # bfloat16 and other dtypes NumPy lacks: widen to float32 (exact for bf16)
        converted[key] = f"{str(value.dtype).replace('torch.', '')}->float32"
        return value.to(torch.float32).numpy()


# --------------------------------------------------------------------------- detectron2 pickles


def _read_pkl(path: str, info: dict[str, Any]) -> dict[str, np.ndarray]:
    from weight_convert.detectron2 import load_pkl  # raises CheckpointError (one line)

    tensors, found = load_pkl(path)
    info["wrapper"] = found.get("wrapper")
    info["ignored"] += list(found.get("ignored", []))
    return tensors


# --------------------------------------------------------------------------- safetensors

_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _read_safetensors(
    path: str, converted: dict[str, str]
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read with ``safetensors.numpy``; files with bfloat16 tensors (which NumPy cannot hold) are
    read from the format directly and those tensors widened to float32, exactly."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
            start = 8 + length
    except (OSError, ValueError, struct.error) as e:
        raise CheckpointError(f"cannot read {path} as safetensors: {e}") from None
    metadata = header.pop("__metadata__", None) or {}
    if not any(entry.get("dtype") == "BF16" for entry in header.values()):
        try:
            from safetensors.numpy import load_file

            return dict(load_file(path)), metadata
        except ImportError:
            pass
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read {path} as safetensors: {e}") from None
    out = {}
    data = np.memmap(path, dtype=np.uint8, mode="r")
    for key, entry in header.items():
        begin, end = entry["data_offsets"]
        raw = np.asarray(data[start + begin : start + end])
        shape = tuple(entry["shape"])
        if entry["dtype"] == "BF16":
            bits = raw.view("<u2").astype(np.uint32) << 16
            out[key] = bits.view(np.float32).reshape(shape)
            converted[key] = "bfloat16->float32"
        elif entry["dtype"] in _ST_DTYPES:
            dtype = np.dtype(_ST_DTYPES[entry["dtype"]]).newbyteorder("<")
            out[key] = raw.view(dtype).reshape(shape).copy()
        else:
            raise CheckpointError(f"{path}: tensor {key} has unsupported dtype {entry['dtype']}")
    return out, metadata
