"""Segment Anything image encoder, Keras 3 port of ``zoo.models.sam_image_encoder``: same module
tree and names (``root/blocks-2/attn/rel_pos_h``, ``root/neck-3/gamma``), channels-last,
``keras.ops`` only.
"""

from __future__ import annotations

from functools import partial

import keras
from keras import ops

from ports.keras.layers.mlp import MLPBlock
from ports.keras.layers.norm import LayerNorm, LayerNorm2d
from ports.keras.layers.vitdet import Block
from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
from zoo.families.sam import SamConfig
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["ImageEncoderViT", "SamPatchEmbed"]


class SamPatchEmbed(keras.layers.Layer):
    """Image -> patch tokens: a conv with kernel = stride = patch and no padding (sizes that are
    no multiple of the patch are floored, as in the official code).

    Input: (B, H, W, in_chans) channels-last. Output: (B, H // patch, W // patch, embed_dim).
    """

    def __init__(
        self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.in_chans = in_chans
        self.proj = keras.layers.Conv2D(
            embed_dim,
            kernel_size=patch_size,
            strides=patch_size,
            padding="valid",
            data_format="channels_last",
            name="proj",
        )

    def build(self, input_shape: tuple) -> None:
        self.proj.build((input_shape[0], None, None, self.in_chans))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        return self.proj(x)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return self.proj.compute_output_shape(input_shape)


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("sam_image_encoder", "keras")
class ImageEncoderViT(ZooModel):
    """SAM image encoder.

    Input: (B, H, W, in_chans) channels-last, normalized and padded; the token grid
    (H // patch, W // patch) must equal pos_embed's (img_size / patch in each axis), else
    ValueError (the position embedding is not resized). With ``use_abs_pos=False`` any grid runs.
    Output: (B, H // patch, W // patch, out_chans).

    Blocks use LayerNorm eps 1e-6, window attention of ``window_size`` with zero padding, and
    global attention at ``encoder_global_attn_indexes`` with tables for the full grid.
    """

    def __init__(self, config: SamConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        dim, self.grid = config.encoder_embed_dim, config.img_size // config.patch_size
        self.patch_embed = SamPatchEmbed(
            config.patch_size, config.in_chans, dim, name="patch_embed"
        )
        global_blocks = set(config.encoder_global_attn_indexes)
        self.blocks = [
            Block(
                dim,
                config.encoder_num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                norm_layer=partial(LayerNorm, eps=1e-6),
                use_rel_pos=config.use_rel_pos,
                window_size=0 if i in global_blocks else config.window_size,
                input_size=(self.grid, self.grid),
                mlp_layer=MLPBlock,
                name=f"blocks-{i}",
            )
            for i in range(config.encoder_depth)
        ]
        out = config.out_chans
        self.neck = [
            keras.layers.Conv2D(out, 1, use_bias=False, name="neck-0"),
            LayerNorm2d(out, name="neck-1"),
            keras.layers.Conv2D(out, 3, padding="same", use_bias=False, name="neck-2"),
            LayerNorm2d(out, name="neck-3"),
        ]

    def build(self, input_shape: tuple) -> None:
        config, batch = self.config, input_shape[0]
        dim, out = config.encoder_embed_dim, config.out_chans
        self.patch_embed.build((batch, None, None, config.in_chans))
        self.pos_embed = None
        if config.use_abs_pos:
            self.pos_embed = self.add_weight(
                name="pos_embed", shape=(1, self.grid, self.grid, dim), initializer="zeros"
            )
        for block in self.blocks:
            block.build((batch, None, None, dim))
        for layer, channels in zip(self.neck, (dim, out, out, out), strict=True):
            layer.build((batch, None, None, channels))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        check_inputs(self, "keras", x)
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + ops.cast(self.pos_embed, x.dtype)
        for block in self.blocks:
            x = block(x, training=training)
        for layer in self.neck:
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        p = self.config.patch_size
        spatial = tuple(None if s is None else s // p for s in input_shape[1:3])
        return (input_shape[0], *spatial, self.config.out_chans)
