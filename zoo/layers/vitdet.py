"""ViTDet attention with decomposed relative positions (segment-anything / detectron2 semantics)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.drop import DropPath
from zoo.layers.mlp import MLPBlock
from zoo.layers.norm import LayerNorm
from zoo.layers.window import window_partition, window_reverse
from zoo.windows import pad_amounts, rel_pos_gather_index

__all__ = [
    "get_rel_pos",
    "add_decomposed_rel_pos",
    "decomposed_rel_pos_bias",
    "window_partition_padded",
    "window_unpartition",
    "Attention",
    "Block",
]


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative positional embeddings for every (query, key) pair along one axis.

    rel_pos: (L, C). When L != 2 * max(q_size, k_size) - 1 the table is linearly interpolated to
    that length first. Returns (q_size, k_size, C).
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_rel_dist,
            mode="linear",
        )
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)
    index = torch.from_numpy(rel_pos_gather_index(q_size, k_size).copy()).to(rel_pos.device)
    return rel_pos[index]


def _rel_pos_terms(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The height and width terms of the decomposed relative positions: (B, q_h, q_w, k_h) and
    (B, q_h, q_w, k_w)."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    b, _, dim = q.shape
    r_q = q.reshape(b, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(q_h, k_h, rel_pos_h))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(q_w, k_w, rel_pos_w))
    return rel_h, rel_w


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> torch.Tensor:
    """Additive attention bias from decomposed relative positions (MViTv2).

    q: (B, q_h * q_w, C), unscaled queries. Returns (B, q_h * q_w, k_h * k_w).
    """
    rel_h, rel_w = _rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return bias.reshape(q.shape[0], q_size[0] * q_size[1], k_size[0] * k_size[1])


def add_decomposed_rel_pos(
    attn: torch.Tensor,
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
    inplace: bool = False,
) -> torch.Tensor:
    """attn (B, q_h * q_w, k_h * k_w) plus the decomposed relative-position bias of ``q``,
    added in segment-anything's and detectron2's order (the height term, then the width term),
    so the sums round as theirs. ``inplace``: added into ``attn`` itself (the same bits)."""
    (q_h, q_w), (k_h, k_w), b = q_size, k_size, q.shape[0]
    rel_h, rel_w = _rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    attn = attn.view(b, q_h, q_w, k_h, k_w)
    if inplace:
        attn.add_(rel_h[:, :, :, :, None]).add_(rel_w[:, :, :, None, :])
    else:
        attn = attn + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return attn.view(b, q_h * q_w, k_h * k_w)


def window_partition_padded(
    x: torch.Tensor, window_size: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad (B, H, W, C) to multiples of ``window_size`` and split into windows.

    Returns windows (B * nW, window_size, window_size, C) and the padded size (Hp, Wp).
    """
    h, w = x.shape[1:3]
    pad_h, pad_w = pad_amounts((h, w), (window_size, window_size))
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return window_partition(x, (window_size, window_size)), (h + pad_h, w + pad_w)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """(B * nW, ws, ws, C) -> (B, H, W, C): reverse ``window_partition_padded`` and drop padding."""
    x = window_reverse(windows, (window_size, window_size), pad_hw)
    return x[:, : hw[0], : hw[1], :]


class Attention(nn.Module):
    """Multi-head attention over a (B, H, W, C) map with optional decomposed relative positions.

    ``input_size`` is the (H, W) the relative-position tables are made for; other sizes
    interpolate them (``get_rel_pos``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required when use_rel_pos is True")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = x.shape
        # segment-anything's and detectron2's operations in their order (scaled queries times
        # keys, the relative positions added, softmax, times values), not a fused kernel: the
        # reference then equals them bit for bit (the mask generator's masks are identical)
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)  # (B heads, HW, hd)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            # In place into the fresh logits: the same two additions in the same order, without
            # two new logits-sized tensors (805 MB each in SAM's 4096-token global blocks; with
            # them a SAM-B forward pass took 15 GB fresh from the kernel, timm's 8.4 GB). The
            # product's backward does not read its output, so autograd allows it.
            attn = add_decomposed_rel_pos(
                attn, q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w), inplace=True
            )
        if torch.is_grad_enabled():
            attn = attn.softmax(dim=-1)
        else:  # the same kernel, written over the logits (no third logits-sized tensor)
            attn = torch.softmax(attn, dim=-1, out=attn)
        out = attn @ v
        out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, c)
        return self.proj(out)


class Block(nn.Module):
    """ViTDet transformer block: windowed (window_size > 0, with padding) or global attention.

    (B, H, W, C) -> (B, H, W, C). ``mlp_layer(dim, hidden)`` is injected: segment-anything uses
    ``MLPBlock`` (lin1 / lin2); detectron2 uses ``Mlp`` (fc1 / fc2). Norms use eps 1e-5 in both.

    ``drop_path`` is detectron2's per-sample stochastic depth, applied to the attention branch
    and to the MLP branch before each residual sum (``nn.Identity`` at 0). segment-anything's
    encoder has none: SAM builds its blocks with the default 0.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_layer: Callable[[int], nn.Module] = LayerNorm,
        use_rel_pos: bool = False,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
        mlp_layer: Callable[..., nn.Module] = MLPBlock,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1:3]
            x, pad_hw = window_partition_padded(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))
