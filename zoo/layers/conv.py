"""Convolutions the ports implement themselves, under the names the ports use."""

from __future__ import annotations

from torch import nn

__all__ = ["ConvTranspose2d"]

#: ``torch.nn.ConvTranspose2d`` (weight (in, out, k, k)). The ports support stride == kernel_size,
#: the only form SAM's mask decoder and ViTDet's feature pyramid use.
ConvTranspose2d = nn.ConvTranspose2d
