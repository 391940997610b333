"""ViTDet: the plain ViT backbone and the simple feature pyramid of detectron2
(``detectron2.modeling.backbone.vit``), attribute names as in its checkpoints with the
``backbone.`` prefix removed (``net.blocks.0.attn.rel_pos_h``, ``simfp_2.4.norm.weight``).

The pyramid stages are ``nn.ModuleList``s where detectron2 has ``nn.Sequential``s: the same
state-dict keys, and the stages are run item by item. Parameter-free members (GELU, max pool)
keep their index, so ``simfp_2.3`` is the second transposed convolution as in detectron2.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.families.vitdet import ViTDetConfig
from zoo.interpolate import resize_matrix
from zoo.layers.conv import ConvTranspose2d
from zoo.layers.mlp import Mlp
from zoo.layers.norm import LayerNorm2d
from zoo.layers.patch import PatchEmbed
from zoo.layers.vitdet import Block
from zoo.registry import register_model
from zoo.tensor_format import Format
from zoo.validate import check_inputs

__all__ = [
    "Conv2d",
    "GELU2d",
    "LastLevelMaxPool",
    "MaxPool2d",
    "SimpleFeaturePyramid",
    "ViT",
    "get_abs_pos",
]

#: detectron2's ViT norm: ``partial(nn.LayerNorm, eps=1e-6)``.
_LAYER_NORM = partial(nn.LayerNorm, eps=1e-6)


def get_abs_pos(abs_pos: torch.Tensor, has_cls_token: bool, hw: tuple[int, int]) -> torch.Tensor:
    """Absolute position embeddings for an (h, w) token grid.

    abs_pos: (1, [1 +] S * S, C), a square S x S table trained at the pre-training size (with a
    class-token row first when ``has_cls_token``; it is dropped). When (S, S) != (h, w) the table
    is resized bicubically (``F.interpolate(mode="bicubic", align_corners=False)`` as constant
    matrices, ``zoo.interpolate``). Returns (1, h, w, C).
    """
    h, w = hw
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    size = math.isqrt(abs_pos.shape[1])
    if size * size != abs_pos.shape[1]:
        raise ValueError(f"position table of {abs_pos.shape[1]} entries is not square")
    table = abs_pos.reshape(size, size, -1)
    if (size, size) != (h, w):
        m_h = torch.from_numpy(resize_matrix(size, h, "bicubic").astype(np.float32))
        m_w = torch.from_numpy(resize_matrix(size, w, "bicubic").astype(np.float32))
        table = torch.einsum("ip,pqc->iqc", m_h.to(table), table)
        table = torch.einsum("jq,iqc->ijc", m_w.to(table), table)
    return table[None]


class ViT(nn.Module):
    """detectron2's plain ViT backbone: patch embedding, absolute position embedding (resized to
    the input grid), blocks with windowed (``window_block_indexes``) or global attention with
    decomposed relative positions.

    Input: (B, in_chans, H, W) channels-first, H, W multiples of the patch (detectron2 pads
    images so; other sizes are zero-padded at the end here, where detectron2's conv would drop
    the remainder). Output: the last block's map (B, embed_dim, H / patch, W / patch),
    channels-first (detectron2's ``last_feat``).

    Stochastic depth rises linearly over the blocks (``config.drop_path_rates()``, detectron2's
    ``torch.linspace(0, drop_path_rate, depth)``); it acts in training mode only.
    """

    output_format = Format.CHANNELS_FIRST

    def __init__(self, config: ViTDetConfig) -> None:
        super().__init__()
        self.config = config
        p = config.patch_size
        self.patch_embed = PatchEmbed((p, p), config.in_chans, config.embed_dim)
        if config.use_abs_pos:
            grid = config.pretrain_img_size // p
            positions = grid * grid + (1 if config.pretrain_use_cls_token else 0)
            self.pos_embed = nn.Parameter(torch.zeros(1, positions, config.embed_dim))
        else:
            self.pos_embed = None
        size = config.img_size // p
        rates = config.drop_path_rates()
        self.blocks = nn.ModuleList(
            Block(
                config.embed_dim,
                config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                norm_layer=_LAYER_NORM,
                use_rel_pos=config.use_rel_pos,
                window_size=config.window_size if i in config.window_block_indexes else 0,
                input_size=(size, size),
                mlp_layer=Mlp,
                drop_path=rates[i],
            )
            for i in range(config.depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_inputs(self, "torch", x)
        x = self.patch_embed(x)  # (B, h, w, C)
        if self.pos_embed is not None:
            x = x + get_abs_pos(
                self.pos_embed, self.config.pretrain_use_cls_token, (x.shape[1], x.shape[2])
            )
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 3, 1, 2)


class Conv2d(nn.Conv2d):
    """detectron2's ``Conv2d``: ``nn.Conv2d`` followed by an optional ``norm`` child (so its
    parameters sit at ``<conv>.norm.weight``). (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(self, *args, norm: nn.Module | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return x if self.norm is None else self.norm(x)


class GELU2d(nn.GELU):
    """Exact GELU on a channels-first map (declares its layout). Any shape."""

    output_format = Format.CHANNELS_FIRST


class MaxPool2d(nn.MaxPool2d):
    """2 x 2 max pool, stride 2, on a channels-first map: (B, C, H, W) -> (B, C, H//2, W//2)."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self) -> None:
        super().__init__(kernel_size=2, stride=2)


class LastLevelMaxPool(nn.Module):
    """detectron2's FPN top block: p6 = ``max_pool2d(p5, kernel_size=1, stride=2)``, i.e. every
    other row and column. (B, C, H, W) -> (B, C, ceil(H / 2), ceil(W / 2))."""

    output_format = Format.CHANNELS_FIRST
    num_levels = 1
    in_feature = "p5"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=1, stride=2, padding=0)


def _stage(dim: int, scale: float, out_channels: int) -> nn.ModuleList:
    if scale == 4.0:
        layers: list[nn.Module] = [
            ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            LayerNorm2d(dim // 2),
            GELU2d(),
            ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
        ]
        out_dim = dim // 4
    elif scale == 2.0:
        layers, out_dim = [ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)], dim // 2
    elif scale == 1.0:
        layers, out_dim = [], dim
    elif scale == 0.5:
        layers, out_dim = [MaxPool2d()], dim
    else:
        raise ValueError(f"scale factor {scale} is not supported (4.0, 2.0, 1.0, 0.5)")
    layers += [
        Conv2d(out_dim, out_channels, 1, bias=False, norm=LayerNorm2d(out_channels)),
        Conv2d(
            out_channels, out_channels, 3, padding=1, bias=False, norm=LayerNorm2d(out_channels)
        ),
    ]
    return nn.ModuleList(layers)


@register_model("vitdet", "torch")
class SimpleFeaturePyramid(nn.Module):
    """ViTDet backbone: ``net`` (``ViT``) and one pyramid stage per scale factor on its last map,
    plus ``top_block`` (p6 from p5).

    Input: (B, in_chans, H, W) channels-first, normalized; H, W multiples of 32 as detectron2
    requires (its ``size_divisibility``; it pads images to ``square_pad``), other multiples of 16
    run too (the 0.5 stage floors). Output: [p2, p3, p4, p5, p6], each
    (B, out_channels, H / stride, W / stride) channels-first, strides 4, 8, 16, 32, 64.
    """

    output_format = Format.CHANNELS_FIRST

    def __init__(self, config: ViTDetConfig) -> None:
        super().__init__()
        self.config = config
        # detectron2 registers the stages before the backbone: state-dict order simfp_*, net.*
        self.stage_names = config.stage_names()
        for name, scale in zip(self.stage_names, config.scale_factors, strict=True):
            self.add_module(name, _stage(config.embed_dim, scale, config.out_channels))
        self.net = ViT(config)
        self.top_block = LastLevelMaxPool() if config.top_block else None
        if config.top_block and "simfp_5" not in self.stage_names:
            raise ValueError("top_block needs the stride-32 stage (scale factor 0.5 at patch 16)")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_inputs(self, "torch", x)
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
