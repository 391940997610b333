"""Variable types of the Flax port beyond ``nnx.Param``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["Buffer", "CHECKPOINT_VARIABLES", "abstract", "declare_dtype", "set_compute_dtype"]


class Buffer(nnx.Variable):
    """A constant the official checkpoint stores (a persistent PyTorch buffer, e.g. SAM's random
    Fourier matrix): saved, loaded and converted like a parameter, never trained (optimizers
    filter on ``nnx.Param``)."""


#: Variable types a checkpoint holds: what conversion and ``ports.flax.serialization`` move
#: (``nnx.BatchStat``: BatchNorm's running statistics, PyTorch buffers updated in training).
CHECKPOINT_VARIABLES = (nnx.Param, Buffer, nnx.BatchStat)


def abstract(make: Callable[[nnx.Rngs], nnx.Module], rngs: nnx.Rngs | None = None) -> nnx.Module:
    """``make(rngs)`` with abstract parameters (``nnx.eval_shape``: shapes and dtypes, no
    initializer run, which would compile once per parameter shape) but concrete dropout /
    drop-path streams forked from ``rngs`` (default ``nnx.Rngs(0)``), so the module runs,
    jitted or not, once its parameters are assigned."""
    module = nnx.eval_shape(lambda: make(nnx.Rngs(0)))
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    for _, node in nnx.iter_graph(module):
        if isinstance(node, nnx.RngStream):
            fresh = rngs[node.tag].fork()
            node.key.set_value(fresh.key.get_value())
            node.count.set_value(fresh.count.get_value())
    return module


def declare_dtype(module: nnx.Module, dtype: Any) -> nnx.Module:
    """Declare every floating checkpoint variable of an abstract ``module`` (``abstract``)
    ``dtype``: an abstract variable is only a shape and a dtype, and what is assigned to it is
    cast to it. The Flax port takes no ``param_dtype``: its layers compute in the dtype their
    inputs and parameters promote to, so float64 parameters and inputs compute in float64
    (under ``jax.enable_x64``)."""
    for _, node in nnx.iter_graph(module):
        if isinstance(node, CHECKPOINT_VARIABLES):
            value = node.get_value()
            if jnp.issubdtype(value.dtype, jnp.floating):
                node.set_value(jax.ShapeDtypeStruct(value.shape, dtype))
    return module


def set_compute_dtype(module: nnx.Module, dtype: Any) -> nnx.Module:
    """Set the computation ``dtype`` of every layer of ``module`` in place (mixed precision with
    ``jnp.bfloat16``): the layers that take ``dtype`` / ``param_dtype`` (``nnx.Linear``,
    ``nnx.Conv``, ``nnx.LayerNorm``, ``nnx.Embed``, the port's ``ConvTranspose2d``) cast their
    inputs and parameters to ``dtype`` when they run; the parameters keep their own dtype
    (float32), so gradients and optimizer updates stay float32. ``nnx.LayerNorm`` computes its
    mean and variance in float32 whatever ``dtype`` is. Parameters the port reads directly (the
    relative position tables, position embeddings) are not layers: they join the computation by
    JAX's promotion, so a float32 table added to bfloat16 activations gives float32, as under
    ``torch.autocast``. Returns ``module``."""
    for _, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Module) and hasattr(node, "param_dtype") and hasattr(node, "dtype"):
            node.dtype = None if dtype is None else jnp.dtype(dtype)
    return module
