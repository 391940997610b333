"""Pooling layers (channels-last) with PyTorch's padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.pooling import pool_arguments

__all__ = ["PAD_VALUE", "MaxPool2d"]

#: what ``MaxPool2d`` pads with: -inf, as PyTorch (zeros would win over a border of negative
#: values)
PAD_VALUE = float("-inf")


class MaxPool2d(nnx.Module):
    """``torch.nn.MaxPool2d(kernel_size, stride, padding)`` (floor mode) channels-last:
    (B, H, W, C) -> (B, (H + 2p - k) // s + 1, (W + 2p - k) // s + 1, C), padded with
    ``PAD_VALUE`` (-inf)."""

    def __init__(
        self,
        kernel_size: int,
        stride: int | None = None,
        padding: int = 0,
        dilation: int = 1,
        ceil_mode: bool = False,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        del rngs
        self.kernel_size, self.stride, self.padding = pool_arguments(
            kernel_size, stride, padding, ceil_mode, dilation
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.padding
        if p:
            x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=PAD_VALUE)
        k, s = self.kernel_size, self.stride
        return nnx.max_pool(x, (k, k), strides=(s, s), padding="VALID")
