"""Swin transformer block for 2D (Swin) and 3D (Video Swin) token maps."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.drop import DropPath
from zoo.layers.mlp import Mlp
from zoo.layers.norm import LayerNorm
from zoo.layers.window import window_partition, window_reverse
from zoo.layers.window_attention import WindowAttention, accept_window_buffer
from zoo.windows import effective_window, pad_amounts, shifted_window_mask

__all__ = ["SwinTransformerBlock"]


@functools.cache
def _mask_tensor(padded, window, shift) -> torch.Tensor | None:
    mask = shifted_window_mask(padded, window, shift)
    return None if mask is None else torch.from_numpy(mask.copy())


@functools.cache
def _opaque_mask_tensor():
    # Built on first use under torch.compile only: torch.compiler.disable imports the compiler
    # (dynamo) and with it triton, which must not be imported after TensorFlow in one process.
    return torch.compiler.disable(_mask_tensor)


def _mask(padded, window, shift) -> torch.Tensor | None:
    """The shift mask as a tensor, made once per geometry; opaque to ``torch.compile``, which
    would otherwise trace the NumPy table construction."""
    if torch.compiler.is_compiling():
        return _opaque_mask_tensor()(padded, window, shift)
    return _mask_tensor(padded, window, shift)


class SwinTransformerBlock(nn.Module):
    """norm1 -> (pad, cyclic shift, window attention with mask, reverse, crop) -> residual,
    norm2 -> mlp -> residual.

    One design serves 2D and 3D: the rank of ``window_size`` decides the spatial rank, and the parts
    that differ are injected: ``attn_layer`` (built with the window), ``norm_layer``, ``act_layer``,
    ``mlp_layer`` and ``window_rule``, the name of the rule in ``zoo.windows.WINDOW_RULES`` that
    decides the window and shift for a given input size ("shrink": Video Swin's
    ``get_window_size``; "pad": torchvision's 2D behaviour).

    Input and output: (B, *S, C), channels-last, any S (padded internally to window multiples).

    The shift mask is computed per input size, never stored; the official 2D releases carry
    one (``attn_mask``, made at the training resolution) in shifted blocks, which loads: its
    shape is checked against the window and it is dropped (``accept_window_buffer``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int] | None = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = LayerNorm,
        attn_layer: type[nn.Module] = WindowAttention,
        mlp_layer: type[nn.Module] = Mlp,
        window_rule: str = "shrink",
    ) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = tuple(window_size)
        self.shift_size = tuple(shift_size) if shift_size is not None else (0,) * len(window_size)
        self.window_rule = window_rule
        accept_window_buffer(self, "attn_mask")
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(
            dim,
            window_size=self.window_size,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(
            in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop
        )

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(x.shape[1:-1])
        nd = len(spatial)
        window, shift = effective_window(
            spatial, self.window_size, self.shift_size, self.window_rule
        )
        pads = pad_amounts(spatial, window)
        if any(pads):
            # F.pad lists the last axis first: channels (0, 0), then spatial axes in reverse.
            x = F.pad(x, [0, 0] + [p for pad in reversed(pads) for p in (0, pad)])
        padded = tuple(s + p for s, p in zip(spatial, pads, strict=False))
        axes = tuple(range(1, nd + 1))
        if any(shift):
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=axes)
        mask = _mask(padded, window, shift)
        mask = None if mask is None else mask.to(x.device, x.dtype)
        windows = window_partition(x, window).flatten(1, nd)  # (B * nW, N, C)
        windows = self.attn(windows, mask=mask)
        x = window_reverse(windows.reshape(-1, *window, x.shape[-1]), window, padded)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=axes)
        if any(pads):
            x = x[(slice(None),) + tuple(slice(0, s) for s in spatial)]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self._attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
