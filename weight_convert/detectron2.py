"""Reading detectron2 ``.pkl`` checkpoints without running code from the file. Framework-free.

detectron2's model zoo ships weights as a plain pickle of NumPy arrays,
``{"model": {name: ndarray}, "__author__": ..., "matching_heuristics": ...}`` (detectron2's own
``DetectionCheckpointer`` reads it with ``pickle.load(f, encoding="latin1")``). A pickle can call
any importable function while it loads, so ``load_pkl`` uses an unpickler that resolves only the
few globals NumPy arrays and plain containers need and refuses every other one with
``UnsafePickleError`` before anything is called.
"""

from __future__ import annotations

import codecs
import collections
import os
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from weight_convert.errors import (
    CheckpointError,
    MissingFileError,
    NotACheckpointError,
    UnsafePickleError,
    first_line,
)

__all__ = ["ALLOWED_GLOBALS", "UnsafePickleError", "load_pkl"]


def _numpy_internals() -> tuple[Any, Any]:
    """NumPy's ``multiarray`` and ``numeric`` modules (``numpy._core`` in NumPy 2,
    ``numpy.core`` before)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy < 1.26 has no numpy._core
        from numpy.core import multiarray, numeric
    return multiarray, numeric


def _allowed() -> dict[tuple[str, str], Callable[..., Any]]:
    multiarray, numeric = _numpy_internals()
    table: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        # protocol <= 2 pickles write bytes as _codecs.encode(str, "latin1")
        ("_codecs", "encode"): codecs.encode,
    }
    # Arrays pickled by NumPy 1.x name numpy.core, by NumPy 2.x numpy._core: same functions.
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5 arrays
    return table


#: (module, name) -> the object an allowed global resolves to. Everything a pickle of NumPy
#: arrays in dicts / lists / tuples needs, and nothing that can reach the file system or run code.
ALLOWED_GLOBALS = _allowed()


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: a weights pickle holds only NumPy "
                "arrays and plain containers (nothing was executed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a persistent id: not a plain pickle of NumPy arrays")


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
            data = _SafeUnpickler(f, encoding="latin1").load()
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{path}: {e}") from None
        except Exception as e:  # noqa: BLE001 - any unpickling failure is one user-facing error
            raise CheckpointError(
                f"cannot read {path} as a pickle (truncated or corrupt?): {first_line(e)}"
            ) from None
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
