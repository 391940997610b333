"""Reading detectron2 ``.pkl`` checkpoints without running code from the file. Framework-free.

detectron2's model zoo ships weights as a plain pickle of NumPy arrays,
``{"model": {name: ndarray}, "__author__": ..., "matching_heuristics": ...}`` (detectron2's own
``DetectionCheckpointer`` reads it with ``pickle.load(f, encoding="latin1")``). A pickle can call
any importable function while it loads, so ``load_pkl`` uses an unpickler that resolves only the
few globals NumPy arrays and plain containers need, each to a stand-in that makes an array only
from the bytes the pickle holds (``numpy_pickle``), and refuses every other one with
``UnsafePickleError`` before anything is called. Protocols 0-5 are read, Python 2's too.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from weight_convert import safe_pickle
from weight_convert.errors import (
    CheckpointError,
    MissingFileError,
    NotACheckpointError,
    UnsafePickleError,
)
from weight_convert.numpy_pickle import NUMPY_GLOBALS
from weight_convert.safe_pickle import RestrictedUnpickler

__all__ = ["UnsafePickleError", "load_pkl"]


def load_pkl(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The flat ``{name: array}`` dict of a detectron2 ``.pkl`` checkpoint and what was found.

    ``{"model": {...}, ...}`` is unwrapped; a bare ``{name: array}`` dict is taken as it is.
    NumPy scalars become 0-d arrays; other values are skipped and listed. ``info`` holds
    ``format`` ("detectron2-pkl"), ``wrapper`` ("model" or None), ``author`` (``__author__``),
    ``matching_heuristics``, ``extra`` (other top-level keys) and ``ignored`` (skipped entries).

    Raises ``UnsafePickleError`` for a pickle that refers to anything but NumPy arrays and plain
    containers, and ``CheckpointError`` for a missing, truncated or malformed file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"no checkpoint file at {path}")
    with open(path, "rb") as f:
        try:
            data = safe_pickle.load(RestrictedUnpickler(f, NUMPY_GLOBALS))
        except CheckpointError as e:  # UnsafePickleError included
            raise type(e)(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise NotACheckpointError(f"{path} holds a {type(data).__name__}, not a dict of arrays")
    info: dict[str, Any] = {
        "format": "detectron2-pkl",
        "wrapper": None,
        "author": data.get("__author__"),
        "matching_heuristics": data.get("matching_heuristics"),
        "extra": [],
        "ignored": [],
    }
    weights = data
    if isinstance(data.get("model"), dict):
        weights = data["model"]
        info["wrapper"] = "model"
        info["extra"] = sorted(str(k) for k in data if k != "model")
    tensors: dict[str, np.ndarray] = {}
    for key, value in weights.items():
        if isinstance(key, str) and isinstance(value, (np.ndarray, np.generic)):
            tensors[key] = np.asarray(value)
        elif not (weights is data and key in ("__author__", "matching_heuristics")):
            info["ignored"].append(str(key))
    if not tensors:
        found = f" (found {info['ignored'][:5]})" if info["ignored"] else ""
        raise NotACheckpointError(f"no arrays in {path}{found}")
    return tensors, info
