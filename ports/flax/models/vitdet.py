"""ViTDet (detectron2's ViT and simple feature pyramid), Flax NNX port of ``zoo.models.vitdet``:
same module tree and attribute names (``net.blocks.0.attn.rel_pos_h``, ``simfp_2.4.norm.scale``),
channels-last.

A pyramid stage is an ``nnx.List`` attribute ``simfp_<k>``; parameter-free items (GELU, max
pool) keep their index, so paths match the reference's ``simfp_<k>.i.*`` keys.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers.conv import ConvTranspose2d
from ports.flax.layers.mlp import GELU, Mlp
from ports.flax.layers.norm import LayerNorm2d
from ports.flax.layers.patch import PatchEmbed
from ports.flax.layers.vitdet import Block
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

_HIGHEST = jax.lax.Precision.HIGHEST


def _layer_norm(dim: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """detectron2's ViT norm: LayerNorm over the last axis, eps 1e-6."""
    return nnx.LayerNorm(dim, epsilon=1e-6, use_fast_variance=False, rngs=rngs)


def get_abs_pos(abs_pos: jax.Array, has_cls_token: bool, hw: tuple[int, int]) -> jax.Array:
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
    table = abs_pos.reshape(size, size, -1)
    if (size, size) != (h, w):
        m_h = jnp.asarray(resize_matrix(size, h, "bicubic"), dtype=table.dtype)
        m_w = jnp.asarray(resize_matrix(size, w, "bicubic"), dtype=table.dtype)
        table = jnp.einsum("ip,pqc->iqc", m_h, table, precision=_HIGHEST)
        table = jnp.einsum("jq,iqc->ijc", m_w, table, precision=_HIGHEST)
    return table[None]


class ViT(nnx.Module):
    """detectron2's plain ViT backbone, channels-last.

    Input: (B, H, W, in_chans), H, W multiples of the patch (others are padded at the end).
    Output: the last block's map (B, H / patch, W / patch, embed_dim). Stochastic depth rises
    linearly over the blocks (``config.drop_path_rates()``), in training mode only.
    """

    def __init__(self, config: ViTDetConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        p = config.patch_size
        self.patch_embed = PatchEmbed((p, p), config.in_chans, config.embed_dim, rngs=rngs)
        if config.use_abs_pos:
            grid = config.pretrain_img_size // p
            positions = grid * grid + (1 if config.pretrain_use_cls_token else 0)
            self.pos_embed = nnx.Param(jnp.zeros((1, positions, config.embed_dim)))
        else:
            self.pos_embed = nnx.data(None)
        size = config.img_size // p
        rates = config.drop_path_rates()
        self.blocks = nnx.List(
            [
                Block(
                    config.embed_dim,
                    config.num_heads,
                    mlp_ratio=config.mlp_ratio,
                    qkv_bias=config.qkv_bias,
                    norm_layer=_layer_norm,
                    use_rel_pos=config.use_rel_pos,
                    window_size=config.window_size if i in config.window_block_indexes else 0,
                    input_size=(size, size),
                    mlp_layer=Mlp,
                    drop_path=rates[i],
                    rngs=rngs,
                )
                for i in range(config.depth)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        check_inputs(self, "flax", x)
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + get_abs_pos(
                self.pos_embed[...], self.config.pretrain_use_cls_token, x.shape[1:3]
            )
        for block in self.blocks:
            x = block(x)
        return x


class Conv2d(nnx.Conv):
    """detectron2's ``Conv2d`` (stride 1, zero padding ``padding``) with an optional ``norm``
    child, channels-last: (B, H, W, in_channels) -> (B, H', W', out_channels). Parameters
    ``kernel`` (k, k, in, out), ``bias`` and the norm's."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        bias: bool = True,
        norm: nnx.Module | None = None,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size=(kernel_size, kernel_size),
            padding=[(padding, padding), (padding, padding)],
            use_bias=bias,
            rngs=rngs,
        )
        self.norm = norm if norm is not None else nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = super().__call__(x)
        return x if self.norm is None else self.norm(x)


class MaxPool2d(nnx.Module):
    """2 x 2 max pool, stride 2 (odd sizes floor): (B, H, W, C) -> (B, H // 2, W // 2, C)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        x = x[:, : h // 2 * 2, : w // 2 * 2, :]
        return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class LastLevelMaxPool(nnx.Module):
    """p6 from p5: every other row and column (``max_pool2d`` with kernel 1, stride 2).
    (B, H, W, C) -> (B, ceil(H / 2), ceil(W / 2), C)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x[:, ::2, ::2, :]


def _stage(dim: int, scale: float, out_channels: int, rngs: nnx.Rngs) -> nnx.List:
    if scale == 4.0:
        layers: list[nnx.Module] = [
            ConvTranspose2d(dim, dim // 2, 2, stride=2, rngs=rngs),
            LayerNorm2d(dim // 2, rngs=rngs),
            GELU(),
            ConvTranspose2d(dim // 2, dim // 4, 2, stride=2, rngs=rngs),
        ]
        out_dim = dim // 4
    elif scale == 2.0:
        layers, out_dim = [ConvTranspose2d(dim, dim // 2, 2, stride=2, rngs=rngs)], dim // 2
    elif scale == 1.0:
        layers, out_dim = [], dim
    elif scale == 0.5:
        layers, out_dim = [MaxPool2d()], dim
    else:
        raise ValueError(f"scale factor {scale} is not supported (4.0, 2.0, 1.0, 0.5)")

    def conv(c_in: int, k: int, padding: int = 0) -> Conv2d:
        norm = LayerNorm2d(out_channels, rngs=rngs)
        return Conv2d(c_in, out_channels, k, padding=padding, bias=False, norm=norm, rngs=rngs)

    layers += [conv(out_dim, 1), conv(out_channels, 3, padding=1)]
    return nnx.List(layers)


@register_model("vitdet", "flax")
class SimpleFeaturePyramid(nnx.Module):
    """ViTDet backbone: ``net`` (``ViT``), one pyramid stage per scale factor on its last map
    and ``top_block`` (p6 from p5).

    Input: (B, H, W, in_chans) channels-last, normalized; H, W multiples of 32 as detectron2
    requires (other multiples of 16 run; the 0.5 stage floors). Output: [p2, p3, p4, p5, p6],
    each (B, H / stride, W / stride, out_channels), strides 4, 8, 16, 32, 64.
    """

    def __init__(self, config: ViTDetConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        self.stage_names = config.stage_names()
        for name, scale in zip(self.stage_names, config.scale_factors, strict=True):
            setattr(self, name, _stage(config.embed_dim, scale, config.out_channels, rngs))
        self.net = ViT(config, rngs=rngs)
        self.top_block = LastLevelMaxPool() if config.top_block else nnx.data(None)
        if config.top_block and "simfp_5" not in self.stage_names:
            raise ValueError("top_block needs the stride-32 stage (scale factor 0.5 at patch 16)")

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        check_inputs(self, "flax", x)
        features = self.net(x)
        results = []
        for name in self.stage_names:
            y = features
            for layer in getattr(self, name):
                y = layer(y)
            results.append(y)
        if self.top_block is not None:
            results.append(self.top_block(results[self.stage_names.index("simfp_5")]))
        return results
