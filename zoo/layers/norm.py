"""Normalization layers."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from zoo.tensor_format import Format

__all__ = ["BatchNorm2d", "ConditionalBatchNorm2d", "LayerNorm", "LayerNorm2d"]

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


class ConditionalBatchNorm2d(nn.Module):
    """Conditional batch normalization (de Vries et al. 2017, "Modulating early visual
    processing by language"; the conditional norms of text-to-image GANs):

        BN(x | c) = (weight + gamma_c(c)) * norm(x) + (bias + beta_c(c))

    ``norm`` is ``bn``, a ``BatchNorm2d(num_features, eps, momentum, affine=False)`` (PyTorch's
    conventions: batch statistics with the biased variance in training, ``running_var`` updated
    with the unbiased one, ``num_batches_tracked``; the running statistics in eval mode);
    ``weight`` / ``bias`` (C,) are the unconditional scale and shift (ones / zeros), and
    ``gamma_c`` / ``beta_c`` are ``nn.Linear(cond_dim, C)`` predicting the per-sample deltas
    (initialized to zero: the block starts as the plain BatchNorm). The common form in the
    literature is this one, the deltas added to a learned (or pretrained) gamma and beta; DF-GAN's
    affine layers drop ``weight`` / ``bias`` and predict gamma and beta whole (an MLP), which is
    this block with ``weight`` = 0 and ``bias`` = 0.

    x (B, C, H, W), c (B, cond_dim) -> (B, C, H, W). Ports: channels-last x (B, H, W, C).
    """

    output_format = Format.CHANNELS_FIRST

    def __init__(
        self,
        num_features: int,
        cond_dim: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False)
        self.gamma_c = nn.Linear(cond_dim, num_features)
        self.beta_c = nn.Linear(cond_dim, num_features)
        for linear in (self.gamma_c, self.beta_c):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gamma = self.weight + self.gamma_c(c)
        beta = self.bias + self.beta_c(c)
        return gamma[:, :, None, None] * self.bn(x) + beta[:, :, None, None]
