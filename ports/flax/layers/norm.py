"""Normalization layers with PyTorch's epsilons and two-pass variance."""

from __future__ import annotations

from flax import nnx

__all__ = ["LayerNorm", "LayerNorm2d"]


def LayerNorm(dim: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """Channels-last LayerNorm over the last axis with PyTorch's eps (1e-5). (..., dim) -> same."""
    return nnx.LayerNorm(dim, epsilon=1e-5, use_fast_variance=False, rngs=rngs)


class LayerNorm2d(nnx.LayerNorm):
    """The reference's channels-first LayerNorm2d, channels-last: normalizes the last axis.

    (B, H, W, C) -> (B, H, W, C); parameters ``scale`` / ``bias`` of shape (C,).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, *, rngs: nnx.Rngs) -> None:
        super().__init__(num_channels, epsilon=eps, use_fast_variance=False, rngs=rngs)
