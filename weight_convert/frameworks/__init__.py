"""Framework adapters, imported lazily so that a JAX user never imports TensorFlow and back.

``reference`` wraps the PyTorch reference; ``port(name)`` returns the adapter of a port:
``"keras"`` (whatever ``KERAS_BACKEND`` selected) or ``"flax"``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PORTS", "output_list", "port"]

PORTS = ("keras", "flax")


def output_list(out: Any) -> list | None:
    """A model's outputs as a list, or None for a single tensor: a tuple or list as it is, a dict
    of named outputs (a ``features`` model's) as its values in their order (the order of
    ``config.features``, the same in every framework)."""
    if isinstance(out, dict):
        return list(out.values())
    if isinstance(out, (list, tuple)):
        return list(out)
    return None


def port(name: str):
    """The adapter module for a port framework (``keras`` or ``flax``)."""
    if name not in PORTS:
        raise ValueError(f"unknown port framework {name!r}; known: {', '.join(PORTS)}")
    return importlib.import_module(f"weight_convert.frameworks.{name}_port")
