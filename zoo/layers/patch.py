"""Patch embedding and patch merging for 2D and 3D inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.norm import LayerNorm
from zoo.windows import pad_amounts

__all__ = ["PatchEmbed", "PatchMerging"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: conv with kernel = stride = patch, optional norm.

    This is where the reference crosses from the channels-first image to channels-last tokens.

    Input: (B, C_in, *S) channels-first, any S (padded at the end of each axis to a multiple of
    the patch, as the official Swin / Video Swin code does).
    Output: (B, *ceil(S / patch), embed_dim).
    """

    def __init__(
        self,
        patch_size: Sequence[int] = (4, 4),
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        conv = _CONV[len(self.patch_size)]
        self.proj = conv(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = pad_amounts(x.shape[2:], self.patch_size)
        if any(pads):
            x = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)])
        x = self.proj(x).movedim(1, -1)  # channels-first -> channels-last
        if self.norm is not None:
            x = self.norm(x)
        return x


class PatchMerging(nn.Module):
    """Downsample the last two spatial axes by 2: gather each 2x2 neighbourhood into 4 * dim
    channels (order (0,0), (1,0), (0,1), (1,1) in (h, w)), norm (none with ``norm_layer=None``),
    linear to 2 * dim.

    Input: (B, H, W, C) or (B, D, H, W, C); odd H or W is zero-padded at the end.
    Output: (B, ceil(H/2), ceil(W/2), 2C) or (B, D, ceil(H/2), ceil(W/2), 2C).
    """

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] | None = LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-3], x.shape[-2]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x0 = x[..., 0::2, 0::2, :]
        x1 = x[..., 1::2, 0::2, :]
        x2 = x[..., 0::2, 1::2, :]
        x3 = x[..., 1::2, 1::2, :]
        x = torch.cat([x0, x1, x2, x3], dim=-1)
        return self.reduction(x if self.norm is None else self.norm(x))
