"""Framework adapters, imported lazily so that a JAX user never imports TensorFlow and back.

``reference`` wraps the PyTorch reference; ``port(name)`` returns the adapter of a port:
``"keras"`` (whatever ``KERAS_BACKEND`` selected) or ``"flax"``.
"""

from __future__ import annotations

import importlib

__all__ = ["PORTS", "port"]

PORTS = ("keras", "flax")


def port(name: str):
    """The adapter module for a port framework (``keras`` or ``flax``)."""
    if name not in PORTS:
        raise ValueError(f"unknown port framework {name!r}; known: {', '.join(PORTS)}")
    return importlib.import_module(f"weight_convert.frameworks.{name}_port")
