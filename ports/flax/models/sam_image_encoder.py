"""Segment Anything image encoder, Flax NNX port of ``zoo.models.sam_image_encoder``: same module
tree and attribute names (``blocks.2.attn.rel_pos_h``, ``neck.3.scale``), channels-last.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers.mlp import MLPBlock
from ports.flax.layers.norm import LayerNorm2d
from ports.flax.layers.vitdet import Block
from zoo.families.sam import SamConfig
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["ImageEncoderViT", "SamPatchEmbed"]


def _block_norm(dim: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """The blocks' LayerNorm: eps 1e-6 as ``build_sam`` sets it. (..., dim) -> same."""
    return nnx.LayerNorm(dim, epsilon=1e-6, use_fast_variance=False, rngs=rngs)


class SamPatchEmbed(nnx.Module):
    """Image -> patch tokens: a conv with kernel = stride = patch and no padding (sizes that are
    no multiple of the patch are floored, as in the official code).

    Input: (B, H, W, in_chans) channels-last. Output: (B, H // patch, W // patch, embed_dim).
    """

    def __init__(
        self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768, *, rngs: nnx.Rngs
    ) -> None:
        self.proj = nnx.Conv(
            in_chans,
            embed_dim,
            kernel_size=(patch_size, patch_size),
            strides=(patch_size, patch_size),
            padding="VALID",
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(x)


@register_model("sam_image_encoder", "flax")
class ImageEncoderViT(nnx.Module):
    """SAM image encoder.

    Input: (B, H, W, in_chans) channels-last, normalized and padded; the token grid
    (H // patch, W // patch) must equal pos_embed's (img_size / patch in each axis), else
    ValueError (the position embedding is not resized). With ``use_abs_pos=False`` any grid runs.
    Output: (B, H // patch, W // patch, out_chans).

    Blocks use LayerNorm eps 1e-6, window attention of ``window_size`` with zero padding, and
    global attention at ``encoder_global_attn_indexes`` with tables for the full grid.
    """

    def __init__(self, config: SamConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        dim, grid = config.encoder_embed_dim, config.img_size // config.patch_size
        self.patch_embed = SamPatchEmbed(config.patch_size, config.in_chans, dim, rngs=rngs)
        self.pos_embed = (
            nnx.Param(jnp.zeros((1, grid, grid, dim))) if config.use_abs_pos else nnx.data(None)
        )
        global_blocks = set(config.encoder_global_attn_indexes)
        self.blocks = nnx.List(
            [
                Block(
                    dim,
                    config.encoder_num_heads,
                    mlp_ratio=config.mlp_ratio,
                    qkv_bias=config.qkv_bias,
                    norm_layer=_block_norm,
                    use_rel_pos=config.use_rel_pos,
                    window_size=0 if i in global_blocks else config.window_size,
                    input_size=(grid, grid),
                    mlp_layer=MLPBlock,
                    rngs=rngs,
                )
                for i in range(config.encoder_depth)
            ]
        )
        out = config.out_chans
        self.neck = nnx.List(
            [
                nnx.Conv(dim, out, kernel_size=(1, 1), use_bias=False, rngs=rngs),
                LayerNorm2d(out, rngs=rngs),
                nnx.Conv(out, out, kernel_size=(3, 3), padding=1, use_bias=False, rngs=rngs),
                LayerNorm2d(out, rngs=rngs),
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        check_inputs(self, "flax", x)
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            pos = self.pos_embed[...]
            x = x + pos
        for block in self.blocks:
            x = block(x)
        for layer in self.neck:
            x = layer(x)
        return x
