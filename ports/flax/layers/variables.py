"""Variable types of the Flax port beyond ``nnx.Param``."""

from __future__ import annotations

from flax import nnx

__all__ = ["Buffer", "CHECKPOINT_VARIABLES"]


class Buffer(nnx.Variable):
    """A constant the official checkpoint stores (a persistent PyTorch buffer, e.g. SAM's random
    Fourier matrix): saved, loaded and converted like a parameter, never trained (optimizers
    filter on ``nnx.Param``)."""


#: Variable types a checkpoint holds: what conversion and ``ports.flax.serialization`` move.
CHECKPOINT_VARIABLES = (nnx.Param, Buffer)
