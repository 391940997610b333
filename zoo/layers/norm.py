"""Normalization layers."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from zoo.tensor_format import Format

__all__ = ["BatchNorm2d", "LayerNorm", "LayerNorm2d"]

#: PyTorch's own BatchNorm2d is the reference (eps 1e-5, momentum 0.1, unbiased variance into
#: ``running_var``, ``num_batches_tracked``); the ports define the same name with the same
#: arguments, channels-last.
BatchNorm2d = nn.BatchNorm2d

#: Channels-last LayerNorm with PyTorch's eps. The ports define the same name with the same eps.
LayerNorm = partial(nn.LayerNorm, eps=1e-5)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a channels-first map (segment-anything / detectron2).

    (B, C, H, W) -> (B, C, H, W). The ports apply the same normalization to (B, H, W, C).
    """

    output_format = Format.CHANNELS_FIRST

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]
