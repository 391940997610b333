"""Unpickling without running code from the file: the one restricted unpickler that detectron2's
``.pkl`` files and ``torch.save``'s pickles are read with. Framework-free (NumPy).

A pickle can call any importable function while it loads. ``RestrictedUnpickler`` resolves only
the globals of its table and refuses every other one with ``UnsafePickleError`` before anything
is called; ``load`` turns every other failure (bad opcode, truncation, nesting, a declared size
beyond memory) into one ``CheckpointError`` line.
"""

from __future__ import annotations

import codecs
import collections
import pickle
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from weight_convert.errors import CheckpointError, UnsafePickleError

__all__ = ["NUMPY_GLOBALS", "RestrictedUnpickler", "load"]


def _numpy_internals() -> tuple[Any, Any]:
    """NumPy's ``multiarray`` and ``numeric`` modules (``numpy._core`` in NumPy 2,
    ``numpy.core`` before)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy < 1.26 has no numpy._core
        from numpy.core import multiarray, numeric
    return multiarray, numeric


def _numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
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


#: (module, name) -> the object an allowed global resolves to: everything a pickle of NumPy
#: arrays in dicts / lists / tuples needs, and nothing that can reach the file system or run code
NUMPY_GLOBALS = _numpy_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``allowed`` (module, name) globals; no persistent ids unless a subclass
    defines them."""

    def __init__(self, file, allowed: Mapping[tuple[str, str], Any]) -> None:
        super().__init__(file, encoding="latin1")
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"its pickle would run code (it imports {module[:60]}.{name[:60]}); only tensors "
                "and plain containers are loaded, nothing from the file ran"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a persistent id: not a plain pickle of arrays")


def load(unpickler: pickle.Unpickler) -> Any:
    """``unpickler.load()`` with every failure one line: ``UnsafePickleError`` for a refused
    global, ``CheckpointError`` for anything malformed."""
    try:
        return unpickler.load()
    except (UnsafePickleError, CheckpointError):
        raise
    except RecursionError:
        raise CheckpointError("corrupt pickle: nested too deeply") from None
    except MemoryError:
        raise CheckpointError("corrupt pickle: it declares more data than it holds") from None
    except Exception as e:  # noqa: BLE001 - any malformed pickle is one user-facing error
        raise CheckpointError(
            f"truncated or corrupt pickle ({type(e).__name__}: {str(e)[:120]})"
        ) from None
