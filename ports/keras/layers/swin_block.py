"""Swin transformer block for 2D (Swin) and 3D (Video Swin) token maps."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
from keras import ops

from ports.keras.layers.drop import DropPath
from ports.keras.layers.mlp import GELU, Mlp
from ports.keras.layers.norm import LayerNorm
from ports.keras.layers.window import Tensor, window_partition, window_reverse
from ports.keras.layers.window_attention import WindowAttention
from zoo.windows import effective_window, pad_amounts, shifted_window_mask

__all__ = ["SwinTransformerBlock"]


class SwinTransformerBlock(keras.layers.Layer):
    """norm1 -> (pad, cyclic shift, window attention with mask, reverse, crop) -> residual,
    norm2 -> mlp -> residual.

    One design serves 2D and 3D: the rank of ``window_size`` decides the spatial rank; the
    ``attn_layer``, ``norm_layer``, ``act_layer`` and ``mlp_layer`` factories are injected, and
    ``window_rule`` names the rule of ``zoo.windows.WINDOW_RULES`` that decides the window and
    shift for a given input size. All of it depends on static shapes only.

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
        act_layer: Callable[..., keras.layers.Layer] = GELU,
        norm_layer: Callable[..., keras.layers.Layer] = LayerNorm,
        attn_layer: Callable[..., keras.layers.Layer] = WindowAttention,
        mlp_layer: Callable[..., keras.layers.Layer] = Mlp,
        window_rule: str = "shrink",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        self.window_size = tuple(int(w) for w in window_size)
        self.shift_size = (
            tuple(int(s) for s in shift_size)
            if shift_size is not None
            else (0,) * len(self.window_size)
        )
        self.window_rule = window_rule
        self.norm1 = norm_layer(dim, name="norm1")
        self.attn = attn_layer(
            dim,
            window_size=self.window_size,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
            name="attn",
        )
        self.drop_path = (
            DropPath(drop_path, name="drop_path")
            if drop_path > 0.0
            else keras.layers.Identity(name="drop_path")
        )
        self.norm2 = norm_layer(dim, name="norm2")
        self.mlp = mlp_layer(
            in_features=dim,
            hidden_features=int(dim * mlp_ratio),
            act_layer=act_layer,
            drop=drop,
            name="mlp",
        )

    def build(self, input_shape: tuple) -> None:
        self.norm1.build(input_shape)
        self.attn.build((None, math.prod(self.window_size), self.dim))
        self.drop_path.build(input_shape)
        self.norm2.build(input_shape)
        self.mlp.build(input_shape)

    def _attention(self, x: Tensor, training: bool | None = None) -> Tensor:
        spatial = tuple(x.shape[1:-1])
        nd = len(spatial)
        c = x.shape[-1]
        window, shift = effective_window(
            spatial, self.window_size, self.shift_size, self.window_rule
        )
        pads = pad_amounts(spatial, window)
        if any(pads):
            x = ops.pad(x, [(0, 0), *((0, p) for p in pads), (0, 0)])
        padded = tuple(s + p for s, p in zip(spatial, pads, strict=True))
        axes = tuple(range(1, nd + 1))
        if any(shift):
            x = ops.roll(x, shift=tuple(-s for s in shift), axis=axes)
        mask = shifted_window_mask(padded, window, shift)
        mask = None if mask is None else ops.cast(ops.convert_to_tensor(mask), x.dtype)
        windows = ops.reshape(window_partition(x, window), (-1, math.prod(window), c))
        windows = self.attn(windows, mask=mask, training=training)
        x = window_reverse(ops.reshape(windows, (-1, *window, c)), window, padded)
        if any(shift):
            x = ops.roll(x, shift=shift, axis=axes)
        if any(pads):
            x = x[(slice(None), *(slice(0, s) for s in spatial))]
        return x

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        # `training` is passed on explicitly so that `stateless_call` (which skips the call
        # context) still reaches the dropouts and stochastic depth.
        x = x + self.drop_path(self._attention(self.norm1(x), training), training=training)
        return x + self.drop_path(self.mlp(self.norm2(x), training=training), training=training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape
