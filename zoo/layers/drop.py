"""Stochastic depth."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["drop_path", "DropPath"]


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` and scale the survivors by 1 / keep.

    x: (B, ...); one Bernoulli draw per sample. Identity when not training or drop_prob == 0.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(shape).bernoulli_(keep)
    return x * mask / keep if keep > 0.0 else x * mask


class DropPath(nn.Module):
    """Per-sample stochastic depth (identity at inference)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
