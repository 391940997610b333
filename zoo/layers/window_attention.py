"""Window multi-head self-attention with a relative position bias (Swin 2D, Video Swin 3D)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.windows import bias_table_size, check_window_buffer, relative_position_index

__all__ = ["WindowAttention", "accept_window_buffer"]


def _array(value: Any):
    return torch.as_tensor(value).detach().cpu().numpy()


def _check_and_drop(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
    *,
    buffer: str,
) -> None:
    key = prefix + buffer
    if key not in state_dict:
        return
    value = state_dict.pop(key)  # load_state_dict's own copy of the caller's dict
    try:
        check_window_buffer(buffer, value, module.window_size, where=key, read=_array)
    except ValueError as e:
        error_msgs.append(str(e))


def accept_window_buffer(module: nn.Module, buffer: str) -> None:
    """Let ``module`` (which has a ``window_size``) load checkpoints that carry ``buffer`` (one of
    ``zoo.windows.WINDOW_BUFFERS``), as the official Swin releases do, under
    ``load_state_dict(strict=True)``: the value is checked against the window
    (``zoo.windows.check_window_buffer``; a wrong one is an error of ``load_state_dict``, under
    ``strict=False`` too) and dropped, since the module derives it. ``state_dict()`` is
    unchanged: the buffer stays out of it."""
    module.register_load_state_dict_pre_hook(functools.partial(_check_and_drop, buffer=buffer))


class WindowAttention(nn.Module):
    """Self-attention inside one window with a learned relative position bias.

    The rank of ``window_size`` selects 2D (Swin) or 3D (Video Swin). The bias table has
    prod(2 * w - 1) rows; ``relative_position_index`` is derived from the window size and is a
    non-persistent buffer, so it is not in ``state_dict()``; a checkpoint that carries it (the
    official releases) still loads strictly: the value is checked against the window, then
    dropped (``accept_window_buffer``).

    When a window is smaller than configured (the input was smaller than the window), the first
    N x N entries of the index are used, as the official Video Swin code does.
    """

    def __init__(
        self,
        dim: int,
        window_size: Sequence[int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = tuple(window_size)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(bias_table_size(self.window_size), num_heads)
        )
        index = torch.from_numpy(relative_position_index(self.window_size).copy())
        self.register_buffer("relative_position_index", index, persistent=False)
        accept_window_buffer(self, "relative_position_index")
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nW, N, C) window tokens; mask: (nW, N, N) additive or None -> (B * nW, N, C)."""
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B_, heads, N, hd)
        index = self.relative_position_index[:n, :n].reshape(-1)
        bias = self.relative_position_bias_table[index].reshape(n, n, -1).permute(2, 0, 1)
        if mask is not None:
            bias = bias.unsqueeze(0) + mask.unsqueeze(1).to(bias.dtype)  # (nW, heads, N, N)
        bias = bias.to(q.dtype)
        if torch.is_grad_enabled():
            # Autograd recording: written out, as torchvision and timm do. SDPA with a bias that
            # needs its gradient falls back to PyTorch's math path, whose -inf-safe softmax
            # (isneginf / all / where over every logit) was 0.2 s of Video Swin-T's 2.6 s
            # training step (scripts/benchmark.py --train --profile).
            if mask is not None:
                # (B, nW, heads, N, hd) against the (nW, heads, N, N) bias: no copy per image
                nw = mask.shape[0]
                q, k, v = (t.reshape(b_ // nw, nw, self.num_heads, n, -1) for t in (q, k, v))
            attn = ((q * self.scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
            out = F.dropout(attn, self.attn_drop, self.training) @ v
        else:
            # SDPA takes its fused CPU kernel only with 4-d inputs and a 4-d mask (batch 1 or
            # B * nW); a 3-d bias or 5-d inputs send it to the math path: 141 vs 22 ms for Video
            # Swin-T's first stage (64 windows of 392 tokens).
            bias = bias.unsqueeze(0) if mask is None else _per_window(bias, b_)
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=bias,
                dropout_p=self.attn_drop if self.training else 0.0,
                scale=self.scale,
            )
        out = out.reshape(b_, self.num_heads, n, -1).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


def _per_window(bias: torch.Tensor, windows: int) -> torch.Tensor:
    """The (nW, heads, N, N) bias of one image's windows repeated for ``windows`` = B * nW
    (a copy only when B > 1: a batch of windows has no stride that repeats every nW)."""
    nw = bias.shape[0]
    if windows == nw:
        return bias
    return bias.unsqueeze(0).expand(windows // nw, *bias.shape).reshape(windows, *bias.shape[1:])
