"""Pooling layers, Flax NNX (channels-last), as PyTorch pools: ``MaxPool2d`` padded with -inf as
PyTorch pads, and ``nn.AdaptiveAvgPool2d`` as two contractions with constant averaging matrices
(``zoo.pooling.adaptive_avg_matrix``: PyTorch's start / end bins), exact at any input size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.pooling import adaptive_avg_matrix, pool_arguments

__all__ = ["PAD_VALUE", "AdaptiveAvgPool2d", "MaxPool2d", "ReLU", "adaptive_avg_pool2d"]


def adaptive_avg_pool2d(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(B, H, W, C) -> (B, h, w, C) as ``F.adaptive_avg_pool2d`` of the channels-first map."""
    _, height, width, _ = x.shape
    if (height, width) == tuple(size):
        return x  # identity bins: exact
    rows = jnp.asarray(adaptive_avg_matrix(height, size[0]), x.dtype)
    cols = jnp.asarray(adaptive_avg_matrix(width, size[1]), x.dtype)
    return jnp.einsum("hH,bHWc,wW->bhwc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)


class AdaptiveAvgPool2d(nnx.Module):
    """``nn.AdaptiveAvgPool2d((h, w))`` on a channels-last map."""

    def __init__(self, output_size: tuple[int, int]) -> None:
        self.output_size = tuple(int(s) for s in output_size)

    def __call__(self, x: jax.Array) -> jax.Array:
        return adaptive_avg_pool2d(x, self.output_size)


class ReLU(nnx.Module):
    """``torch.nn.ReLU`` as a module (a parity record at its path: VGG's ``features.N``, SAM's
    MLP activation, ResNet's ``relu``). Any shape."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(x)


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
