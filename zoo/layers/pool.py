"""Pooling layers: PyTorch's own, the reference the ports match."""

from __future__ import annotations

from torch import nn

__all__ = ["MaxPool2d"]

#: ``nn.MaxPool2d``: its padding is -inf (a padded position never wins), floor mode by default;
#: the ports define the same name (``kernel_size``, ``stride``, ``padding``; floor mode).
MaxPool2d = nn.MaxPool2d
