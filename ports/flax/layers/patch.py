"""Patch embedding and patch merging for 2D and 3D inputs (channels-last)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers.linear import Linear
from ports.flax.layers.norm import LayerNorm
from zoo.windows import pad_amounts

__all__ = ["PatchEmbed", "PatchMerging"]


class PatchEmbed(nnx.Module):
    """Non-overlapping patches -> tokens: conv with kernel = stride = patch, optional norm.

    Input: (B, *S, C_in) channels-last (the reference takes (B, C_in, *S)), any S (padded at the
    end of each axis to a multiple of the patch). Output: (B, *ceil(S / patch), embed_dim).
    """

    def __init__(
        self,
        patch_size: Sequence[int] = (4, 4),
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Callable[..., nnx.Module] | None = None,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.proj = nnx.Conv(
            in_chans,
            embed_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="VALID",
            rngs=rngs,
        )
        self.norm = norm_layer(embed_dim, rngs=rngs) if norm_layer is not None else None

    def __call__(self, x: jax.Array) -> jax.Array:
        pads = pad_amounts(x.shape[1:-1], self.patch_size)
        if any(pads):
            x = jnp.pad(x, [(0, 0)] + [(0, p) for p in pads] + [(0, 0)])
        x = self.proj(x)
        if self.norm is not None:
            x = self.norm(x)
        return x


class PatchMerging(nnx.Module):
    """Downsample the last two spatial axes by 2: gather each 2x2 neighbourhood into 4 * dim
    channels (order (0,0), (1,0), (0,1), (1,1) in (h, w)), norm (none with ``norm_layer=None``),
    linear to 2 * dim.

    Input: (B, H, W, C) or (B, D, H, W, C); odd H or W is zero-padded at the end.
    Output: (B, ceil(H/2), ceil(W/2), 2C) or (B, D, ceil(H/2), ceil(W/2), 2C).
    """

    def __init__(
        self,
        dim: int,
        norm_layer: Callable[..., nnx.Module] | None = LayerNorm,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.dim = dim
        self.reduction = Linear(4 * dim, 2 * dim, use_bias=False, rngs=rngs)
        self.norm = norm_layer(4 * dim, rngs=rngs) if norm_layer is not None else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h, w = x.shape[-3], x.shape[-2]
        if h % 2 or w % 2:
            pad = [(0, 0)] * (x.ndim - 3) + [(0, h % 2), (0, w % 2), (0, 0)]
            x = jnp.pad(x, pad)
        x0 = x[..., 0::2, 0::2, :]
        x1 = x[..., 1::2, 0::2, :]
        x2 = x[..., 0::2, 1::2, :]
        x3 = x[..., 1::2, 1::2, :]
        x = jnp.concatenate([x0, x1, x2, x3], axis=-1)
        return self.reduction(x if self.norm is None else self.norm(x))
