"""ViTDet (detectron2's ViT and simple feature pyramid), Keras 3 port of ``zoo.models.vitdet``:
same module tree and names (``root/net/blocks-0/attn/rel_pos_h``, ``root/simfp_2-4/norm/gamma``),
channels-last, ``keras.ops`` only.

A pyramid stage is a list attribute ``simfp_<k>`` whose items are named ``simfp_<k>-i``, so
variable paths match the reference's ``simfp_<k>.i.*`` keys; parameter-free items (GELU, max
pool) keep their index.
"""

from __future__ import annotations

import math
from functools import partial

import keras
from keras import ops

from ports.keras.layers.conv import ConvTranspose2d
from ports.keras.layers.mlp import GELU, Mlp
from ports.keras.layers.norm import LayerNorm, LayerNorm2d
from ports.keras.layers.patch import PatchEmbed
from ports.keras.layers.vitdet import Block
from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
from zoo.families.vitdet import ViTDetConfig
from zoo.interpolate import resize_matrix
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = [
    "Conv2d",
    "LastLevelMaxPool",
    "MaxPool2d",
    "SimpleFeaturePyramid",
    "ViT",
    "get_abs_pos",
]


def get_abs_pos(abs_pos: Tensor, has_cls_token: bool, hw: tuple[int, int]) -> Tensor:
    """Absolute position embeddings for an (h, w) token grid.

    abs_pos: (1, [1 +] S * S, C), a square table (class-token row first when
    ``has_cls_token``; dropped), resized bicubically to (h, w) by constant matrices
    (``zoo.interpolate``) when the grids differ. Returns (1, h, w, C).
    """
    h, w = hw
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    size = math.isqrt(abs_pos.shape[1])
    if size * size != abs_pos.shape[1]:
        raise ValueError(f"position table of {abs_pos.shape[1]} entries is not square")
    table = ops.reshape(abs_pos, (size, size, -1))
    if (size, size) != (h, w):
        m_h = ops.cast(ops.convert_to_tensor(resize_matrix(size, h, "bicubic")), table.dtype)
        m_w = ops.cast(ops.convert_to_tensor(resize_matrix(size, w, "bicubic")), table.dtype)
        table = ops.einsum("ip,pqc->iqc", m_h, table)
        table = ops.einsum("jq,iqc->ijc", m_w, table)
    return table[None]


class ViT(keras.layers.Layer):
    """detectron2's plain ViT backbone, channels-last.

    Input: (B, H, W, in_chans), H, W multiples of the patch (others are padded at the end).
    Output: the last block's map (B, H / patch, W / patch, embed_dim). Stochastic depth rises
    linearly over the blocks (``config.drop_path_rates()``), in training mode only.
    """

    def __init__(self, config: ViTDetConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        p = config.patch_size
        self.patch_embed = PatchEmbed((p, p), config.in_chans, config.embed_dim, name="patch_embed")
        size = config.img_size // p
        rates = config.drop_path_rates()
        self.blocks = [
            Block(
                config.embed_dim,
                config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                norm_layer=partial(LayerNorm, eps=1e-6),
                use_rel_pos=config.use_rel_pos,
                window_size=config.window_size if i in config.window_block_indexes else 0,
                input_size=(size, size),
                mlp_layer=Mlp,
                drop_path=rates[i],
                name=f"blocks-{i}",
            )
            for i in range(config.depth)
        ]

    def build(self, input_shape: tuple) -> None:
        config = self.config
        if config.use_abs_pos:
            grid = config.pretrain_img_size // config.patch_size
            positions = grid * grid + (1 if config.pretrain_use_cls_token else 0)
            self.pos_embed = self.add_weight(
                name="pos_embed", shape=(1, positions, config.embed_dim), initializer="zeros"
            )
        else:
            self.pos_embed = None
        batch = input_shape[0]
        self.patch_embed.build((batch, None, None, config.in_chans))
        for block in self.blocks:
            block.build((batch, None, None, config.embed_dim))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        check_inputs(self, "keras", x)
        x = self.patch_embed(x, training=training)
        if self.pos_embed is not None:
            pos = ops.convert_to_tensor(self.pos_embed)
            x = x + get_abs_pos(pos, self.config.pretrain_use_cls_token, tuple(x.shape[1:3]))
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return self.patch_embed.compute_output_shape(input_shape)


class Conv2d(keras.layers.Layer):
    """detectron2's ``Conv2d`` (stride 1, zero padding ``padding``) with an optional ``norm``
    child, channels-last: (B, H, W, in_channels) -> (B, H', W', out_channels). Variables
    ``kernel`` (k, k, in, out), ``bias`` and the norm's, under this layer's name."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        bias: bool = True,
        norm: keras.layers.Layer | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding, self.use_bias = kernel_size, padding, bias
        self.norm = norm

    def build(self, input_shape: tuple) -> None:
        k = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, self.in_channels, self.out_channels)
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.out_channels,), initializer="zeros")
            if self.use_bias
            else None
        )
        if self.norm is not None:
            self.norm.build((*input_shape[:-1], self.out_channels))

    def call(self, x: Tensor) -> Tensor:
        p = self.padding
        if p:
            x = ops.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])
        x = ops.conv(
            x, ops.cast(self.kernel, x.dtype), padding="valid", data_format="channels_last"
        )
        if self.bias is not None:
            x = x + ops.cast(self.bias, x.dtype)
        return x if self.norm is None else self.norm(x)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        b, h, w, _ = input_shape
        grow = 2 * self.padding - self.kernel_size + 1
        return (
            b,
            None if h is None else h + grow,
            None if w is None else w + grow,
            self.out_channels,
        )


class MaxPool2d(keras.layers.Layer):
    """2 x 2 max pool, stride 2 (odd sizes floor): (B, H, W, C) -> (B, H // 2, W // 2, C)."""

    def call(self, x: Tensor) -> Tensor:
        _, h, w, c = x.shape
        x = x[:, : h // 2 * 2, : w // 2 * 2, :]
        return ops.max(ops.reshape(x, (-1, h // 2, 2, w // 2, 2, c)), axis=(2, 4))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        b, h, w, c = input_shape
        return (b, None if h is None else h // 2, None if w is None else w // 2, c)


class LastLevelMaxPool(keras.layers.Layer):
    """p6 from p5: every other row and column (``max_pool2d`` with kernel 1, stride 2).
    (B, H, W, C) -> (B, ceil(H / 2), ceil(W / 2), C)."""

    def call(self, x: Tensor) -> Tensor:
        return x[:, ::2, ::2, :]

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        b, h, w, c = input_shape
        return (b, None if h is None else -(-h // 2), None if w is None else -(-w // 2), c)


def _stage(name: str, dim: int, scale: float, out_channels: int) -> list[keras.layers.Layer]:
    def n(i: int) -> str:
        return f"{name}-{i}"

    if scale == 4.0:
        layers = [
            ConvTranspose2d(dim, dim // 2, 2, stride=2, name=n(0)),
            LayerNorm2d(dim // 2, name=n(1)),
            GELU(name=n(2)),
            ConvTranspose2d(dim // 2, dim // 4, 2, stride=2, name=n(3)),
        ]
        out_dim = dim // 4
    elif scale == 2.0:
        layers, out_dim = [ConvTranspose2d(dim, dim // 2, 2, stride=2, name=n(0))], dim // 2
    elif scale == 1.0:
        layers, out_dim = [], dim
    elif scale == 0.5:
        layers, out_dim = [MaxPool2d(name=n(0))], dim
    else:
        raise ValueError(f"scale factor {scale} is not supported (4.0, 2.0, 1.0, 0.5)")
    i = len(layers)

    def norm() -> LayerNorm2d:
        return LayerNorm2d(out_channels, name="norm")

    return [
        *layers,
        Conv2d(out_dim, out_channels, 1, bias=False, norm=norm(), name=n(i)),
        Conv2d(out_channels, out_channels, 3, padding=1, bias=False, norm=norm(), name=n(i + 1)),
    ]


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("vitdet", "keras")
class SimpleFeaturePyramid(ZooModel):
    """ViTDet backbone: ``net`` (``ViT``), one pyramid stage per scale factor on its last map
    and ``top_block`` (p6 from p5).

    Input: (B, H, W, in_chans) channels-last, normalized; H, W multiples of 32 as detectron2
    requires (other multiples of 16 run; the 0.5 stage floors). Output: [p2, p3, p4, p5, p6],
    each (B, H / stride, W / stride, out_channels), strides 4, 8, 16, 32, 64.
    """

    def __init__(self, config: ViTDetConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.stage_names = config.stage_names()
        for name, scale in zip(self.stage_names, config.scale_factors, strict=True):
            setattr(self, name, _stage(name, config.embed_dim, scale, config.out_channels))
        self.net = ViT(config, name="net")
        self.top_block = LastLevelMaxPool(name="top_block") if config.top_block else None
        if config.top_block and "simfp_5" not in self.stage_names:
            raise ValueError("top_block needs the stride-32 stage (scale factor 0.5 at patch 16)")

    def build(self, input_shape: tuple) -> None:
        batch = input_shape[0]
        self.net.build((batch, None, None, self.config.in_chans))
        for name in self.stage_names:
            shape = (batch, None, None, self.config.embed_dim)
            for layer in getattr(self, name):
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        if self.top_block is not None:
            self.top_block.build((batch, None, None, self.config.out_channels))

    def call(self, x: Tensor, training: bool | None = None) -> list[Tensor]:
        check_inputs(self, "keras", x)
        features = self.net(x, training=training)
        results = []
        for name in self.stage_names:
            y = features
            for layer in getattr(self, name):
                y = layer(y)
            results.append(y)
        if self.top_block is not None:
            results.append(self.top_block(results[self.stage_names.index("simfp_5")]))
        return results
