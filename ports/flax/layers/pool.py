"""Pooling and parameter-free layers as ``nnx.Module``s, so the Flax ports keep the reference's
module tree item for item (``features.1`` a ReLU, ``features.4`` a max-pool): adaptive average
pooling as PyTorch's ``nn.AdaptiveAvgPool2d`` with two contractions over constant averaging
matrices (``zoo.pooling.adaptive_avg_matrix``: PyTorch's start / end bins, overlapping or
repeating where the output does not divide the map), exact at any input size. Channels-last."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.pooling import adaptive_avg_matrix

__all__ = ["AdaptiveAvgPool2d", "MaxPool2d", "ReLU", "adaptive_avg_pool2d"]


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


class MaxPool2d(nnx.Module):
    """``nn.MaxPool2d(k, stride)`` (no padding: floor) on a channels-last map."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        self.kernel_size, self.stride = int(kernel_size), int(stride)

    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.stride
        return nnx.max_pool(x, (k, k), strides=(s, s), padding="VALID")


class ReLU(nnx.Module):
    """``nn.ReLU``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(x)
