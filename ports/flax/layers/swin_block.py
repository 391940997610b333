"""Swin transformer block for 2D (Swin) and 3D (Video Swin) token maps."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers.drop import DropPath
from ports.flax.layers.mlp import GELU, Mlp
from ports.flax.layers.norm import LayerNorm
from ports.flax.layers.window import window_partition, window_reverse
from ports.flax.layers.window_attention import WindowAttention
from zoo.windows import effective_window, pad_amounts, shifted_window_mask

__all__ = ["SwinTransformerBlock"]


class SwinTransformerBlock(nnx.Module):
    """norm1 -> (pad, cyclic shift, window attention with mask, reverse, crop) -> residual,
    norm2 -> mlp -> residual.

    The rank of ``window_size`` decides the spatial rank; ``window_rule`` names the rule in
    ``zoo.windows.WINDOW_RULES`` that decides the window and shift for a given input size.
    Factories are called as ``norm_layer(dim, rngs=)``, ``attn_layer(dim, window_size=, ...,
    rngs=)`` and ``mlp_layer(in_features=, hidden_features=, act_layer=, drop=, rngs=)``.

    Input and output: (B, *S, C), channels-last, any S (padded internally to window multiples).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int] | None = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[[], nnx.Module] = GELU,
        norm_layer: Callable[..., nnx.Module] = LayerNorm,
        attn_layer: Callable[..., nnx.Module] = WindowAttention,
        mlp_layer: Callable[..., nnx.Module] = Mlp,
        window_rule: str = "shrink",
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.dim = dim
        self.window_size = tuple(int(w) for w in window_size)
        self.shift_size = (
            tuple(int(s) for s in shift_size)
            if shift_size is not None
            else (0,) * len(self.window_size)
        )
        self.window_rule = window_rule
        self.norm1 = norm_layer(dim, rngs=rngs)
        self.attn = attn_layer(
            dim,
            window_size=self.window_size,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
            rngs=rngs,
        )
        # drop_path == 0: an identity (the reference's nn.Identity) that holds no rng stream.
        self.drop_path = DropPath(drop_path, rngs=rngs if drop_path > 0.0 else None)
        self.norm2 = norm_layer(dim, rngs=rngs)
        self.mlp = mlp_layer(
            in_features=dim,
            hidden_features=int(dim * mlp_ratio),
            act_layer=act_layer,
            drop=drop,
            rngs=rngs,
        )

    def _attention(self, x: jax.Array) -> jax.Array:
        spatial = tuple(x.shape[1:-1])
        nd = len(spatial)
        window, shift = effective_window(
            spatial, self.window_size, self.shift_size, self.window_rule
        )
        pads = pad_amounts(spatial, window)
        if any(pads):
            x = jnp.pad(x, [(0, 0)] + [(0, p) for p in pads] + [(0, 0)])
        padded = tuple(s + p for s, p in zip(spatial, pads, strict=True))
        axes = tuple(range(1, nd + 1))
        if any(shift):
            x = jnp.roll(x, shift=tuple(-s for s in shift), axis=axes)
        mask = shifted_window_mask(padded, window, shift)  # cached NumPy constant or None
        mask = None if mask is None else jnp.asarray(mask, dtype=x.dtype)
        c = x.shape[-1]
        windows = window_partition(x, window).reshape(-1, math.prod(window), c)  # (B * nW, N, C)
        windows = self.attn(windows, mask=mask)
        x = window_reverse(windows.reshape(-1, *window, c), window, padded)
        if any(shift):
            x = jnp.roll(x, shift=shift, axis=axes)
        if any(pads):
            x = x[(slice(None),) + tuple(slice(0, s) for s in spatial)]
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.drop_path(self._attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
