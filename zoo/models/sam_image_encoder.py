"""Segment Anything image encoder: a ViTDet-style ViT (windowed blocks with a few global ones,
decomposed relative positions) and a convolutional neck, as ``segment_anything``'s
``ImageEncoderViT``. Attribute names are the official checkpoint's keys without the
``image_encoder.`` prefix (``blocks.2.attn.rel_pos_h``, ``neck.3.weight``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from zoo.families.sam import SamConfig
from zoo.layers.mlp import MLPBlock
from zoo.layers.norm import LayerNorm2d
from zoo.layers.vitdet import Block
from zoo.registry import register_model
from zoo.tensor_format import Format
from zoo.validate import check_inputs

__all__ = ["ImageEncoderViT", "SamPatchEmbed"]


class SamPatchEmbed(nn.Module):
    """Image -> patch tokens: a conv with kernel = stride = patch and no padding, so sizes that
    are no multiple of the patch are floored, as in the official code.

    Input: (B, in_chans, H, W) channels-first. Output: (B, H // patch, W // patch, embed_dim).
    """

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


@register_model("sam_image_encoder", "torch")
class ImageEncoderViT(nn.Module):
    """SAM image encoder.

    Input: (B, in_chans, H, W) channels-first, normalized and padded (the predictor does both);
    the token grid (H // patch, W // patch) must equal pos_embed's (img_size / patch in each
    axis, 64 x 64 for the released models), else ValueError. The official code would fail there
    too; timm's ``samvit_*`` instead resizes pos_embed (bicubic), which this model does not.
    With ``use_abs_pos=False`` any grid runs (the global blocks interpolate their tables).
    Output: (B, out_chans, H // patch, W // patch) channels-first.

    Blocks use LayerNorm eps 1e-6 (``build_sam``), window attention of ``window_size`` with
    zero padding, and global attention at ``encoder_global_attn_indexes`` with relative-position
    tables made for the full grid (2 * img_size / patch - 1 rows).
    """

    output_format = Format.CHANNELS_FIRST

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.config = config
        dim, grid = config.encoder_embed_dim, config.img_size // config.patch_size
        self.patch_embed = SamPatchEmbed(config.patch_size, config.in_chans, dim)
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, grid, grid, dim)) if config.use_abs_pos else None
        )
        global_blocks = set(config.encoder_global_attn_indexes)
        self.blocks = nn.ModuleList(
            Block(
                dim,
                config.encoder_num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
                use_rel_pos=config.use_rel_pos,
                window_size=0 if i in global_blocks else config.window_size,
                input_size=(grid, grid),
                mlp_layer=MLPBlock,
            )
            for i in range(config.encoder_depth)
        )
        out = config.out_chans
        # A list applied in order (keys neck.0 ... neck.3 as the official nn.Sequential): the
        # ports hold it as a list too, so every call lines up one to one.
        self.neck = nn.ModuleList(
            [
                nn.Conv2d(dim, out, kernel_size=1, bias=False),
                LayerNorm2d(out),
                nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False),
                LayerNorm2d(out),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_inputs(self, "torch", x)
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        for layer in self.neck:
            x = layer(x)
        return x
