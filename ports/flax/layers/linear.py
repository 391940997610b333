"""``nnx.Linear`` whose product is one 2-D matrix product, whatever the input's rank."""

from __future__ import annotations

import jax
from flax import nnx

__all__ = ["Linear"]


class Linear(nnx.Linear):
    """``nnx.Linear`` (same variables, same arguments, same result) that folds the input's
    leading axes into one before the product and unfolds them after.

    Why: ``nnx.Linear`` contracts the last axis of an N-D input with ``dot_general``. Under
    ``grad`` on XLA:CPU the kernel's gradient of such a product is taken against a transposed
    copy of the incoming cotangent, and XLA fuses the whole elementwise cotangent chain of the
    residual stream (every later block's LayerNorm backward) into each of those copies, once
    per Linear: 12 of Swin-T's stage-3 copies each recomputed up to 12 LayerNorm backwards.
    As a (tokens, features) matrix product the copies vanish; a stack of six residual blocks
    trained 1.9x as fast (``scripts/benchmark.py --train --profile``)."""

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        if inputs.ndim <= 2 or out_sharding is not None:
            return super().__call__(inputs, out_sharding)
        y = super().__call__(inputs.reshape(-1, inputs.shape[-1]))
        return y.reshape(*inputs.shape[:-1], y.shape[-1])
