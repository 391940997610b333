"""Patch embedding and patch merging for 2D and 3D inputs (channels-last)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
from keras import ops

from ports.keras.layers.dense import Dense
from ports.keras.layers.norm import LayerNorm
from ports.keras.layers.window import Tensor
from zoo.windows import pad_amounts

__all__ = ["PatchEmbed", "PatchMerging"]

_CONV = {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}


class PatchEmbed(keras.layers.Layer):
    """Non-overlapping patches -> tokens: conv with kernel = stride = patch, optional norm.

    Input: (B, *S, C_in) channels-last (the reference takes (B, C_in, *S)), any S, padded at the
    end of each axis to a multiple of the patch. Output: (B, *ceil(S / patch), embed_dim).
    """

    def __init__(
        self,
        patch_size: Sequence[int] = (4, 4),
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Callable[..., keras.layers.Layer] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        conv = _CONV[len(self.patch_size)]
        self.proj = conv(
            embed_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            data_format="channels_last",
            name="proj",
        )
        self.norm = norm_layer(embed_dim, name="norm") if norm_layer is not None else None

    def build(self, input_shape: tuple) -> None:
        nd = len(self.patch_size)
        self.proj.build((input_shape[0], *(None,) * nd, self.in_chans))
        if self.norm is not None:
            self.norm.build((input_shape[0], *(None,) * nd, self.embed_dim))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        pads = pad_amounts(x.shape[1:-1], self.patch_size)
        if any(pads):
            x = ops.pad(x, [(0, 0), *((0, p) for p in pads), (0, 0)])
        x = self.proj(x)
        if self.norm is not None:
            x = self.norm(x)
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        sizes = zip(input_shape[1:-1], self.patch_size, strict=True)
        spatial = tuple(None if s is None else -(-s // p) for s, p in sizes)
        return (input_shape[0], *spatial, self.embed_dim)


class PatchMerging(keras.layers.Layer):
    """Downsample the last two spatial axes by 2: gather each 2x2 neighbourhood into 4 * dim
    channels (order (0,0), (1,0), (0,1), (1,1) in (h, w)), norm (none with ``norm_layer=None``),
    linear to 2 * dim.

    Input: (B, H, W, C) or (B, D, H, W, C); odd H or W is zero-padded at the end.
    Output: (B, ceil(H/2), ceil(W/2), 2C) or (B, D, ceil(H/2), ceil(W/2), 2C).
    """

    def __init__(
        self,
        dim: int,
        norm_layer: Callable[..., keras.layers.Layer] | None = LayerNorm,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        self.reduction = Dense(2 * dim, use_bias=False, name="reduction")
        self.norm = norm_layer(4 * dim, name="norm") if norm_layer is not None else None

    def build(self, input_shape: tuple) -> None:
        shape = (*input_shape[:-3], None, None, 4 * self.dim)
        if self.norm is not None:
            self.norm.build(shape)
        self.reduction.build(shape)

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        *lead, h, w, c = x.shape
        if h % 2 or w % 2:
            x = ops.pad(x, [(0, 0)] * len(lead) + [(0, h % 2), (0, w % 2), (0, 0)])
            h, w = h + h % 2, w + w % 2
        # (N, H/2, 2, W/2, 2, C) -> (N, H/2, W/2, w-offset, h-offset, C): the 4C channels are
        # then ordered (0,0), (1,0), (0,1), (1,1) in (h, w), as the reference concatenates them.
        x = ops.reshape(x, (-1, h // 2, 2, w // 2, 2, c))
        x = ops.transpose(x, (0, 1, 3, 4, 2, 5))
        x = ops.reshape(x, (-1, *lead[1:], h // 2, w // 2, 4 * c))
        return self.reduction(x if self.norm is None else self.norm(x))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        *lead, h, w, _ = input_shape
        half = [None if s is None else -(-s // 2) for s in (h, w)]
        return (*lead, *half, 2 * self.dim)
