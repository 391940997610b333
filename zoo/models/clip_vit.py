"""CLIP's ViT image encoder, attribute names as OpenAI CLIP ``model.py``'s ``VisionTransformer``
(``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``,
``transformer.resblocks.N.{attn.in_proj_weight, attn.out_proj, ln_1, mlp.c_fc, mlp.c_proj,
ln_2}``, ``ln_post``, ``proj``), so the ``visual.*`` tensors of OpenAI's and open_clip's state
dicts load as they are (``load_state_dict(strict=True)``).

Batch-first: OpenAI's blocks run sequence-first (L, N, D) and open_clip's batch-first; attention
is per sample either way, so the numbers are the same, and every block's output here is
(B, N, D), as in the ports. The attention is ``nn.MultiheadAttention``'s math on its own
parameters (``in_proj_weight`` / ``in_proj_bias`` fused q, k, v rows, ``out_proj``), written out
so that it returns one tensor and calls ``out_proj`` as a module: both are recorded by the
parity harness, as every other layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.families.clip_vit import ClipViTConfig
from zoo.family import check_features
from zoo.registry import register_model
from zoo.validate import check_inputs

#: the generic names (Mlp, Transformer, LayerNorm) stay unexported: exports are unique across
#: the families
__all__ = ["MultiheadAttention", "QuickGELU", "ResidualAttentionBlock", "VisionTransformer"]


class LayerNorm(nn.LayerNorm):
    """OpenAI CLIP's LayerNorm: a float16 / bfloat16 input is normalized in float32 (the release
    weights are float16), the result cast back; float32 and float64 as they are.
    (..., dim) -> same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(torch.promote_types(x.dtype, torch.float32))).to(x.dtype)


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: CLIP's activation (not ``nn.GELU``). Any shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class MultiheadAttention(nn.Module):
    """Self-attention with ``nn.MultiheadAttention``'s parameters and math, batch-first.

    ``in_proj_weight`` (3 dim, dim) / ``in_proj_bias`` (3 dim,): the q, k, v rows in that order;
    ``out_proj``: Linear(dim, dim). (B, N, dim) -> (B, N, dim).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's initialization
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, hd)
        return self.out_proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """c_fc -> QuickGELU (``gelu``, OpenAI's name) -> c_proj. (..., dim) -> same."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(dim, hidden)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)), then + mlp(ln_2(x)). (B, N, dim) -> same. Attributes in OpenAI's
    order (attn, ln_1, mlp, ln_2): the state dict's order."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.attn = MultiheadAttention(dim, heads)
        self.ln_1 = LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)
        self.ln_2 = LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """``resblocks``: the residual blocks, applied in order by ``VisionTransformer`` (which
    stops after the last feature asked for)."""

    def __init__(self, width: int, layers: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, hidden) for _ in range(layers)
        )


@register_model("clip_vit", "torch")
class VisionTransformer(nn.Module):
    """CLIP ViT image encoder.

    Input: (B, in_chans, H, W) channels-first, normalized (``CLIP_MEAN`` / ``CLIP_STD``), with
    (H // patch, W // patch) the trained grid (sizes that floor to it run; others raise
    ValueError: the positional embedding is not resized).
    Output: the image embedding (B, output_dim): ``ln_post`` of the class token ``@ proj``.
    With ``config.features``: a dict of those outputs in that order (tokens (B, N, width) for
    ``ln_pre``, ``transformer.resblocks.N`` and ``ln_post``; ``proj`` (B, output_dim)).
    ``ln_post`` normalizes every token, as open_clip does (OpenAI normalizes the class token
    only; a LayerNorm is per token, so the embedding is the same).
    """

    def __init__(self, config: ClipViTConfig) -> None:
        super().__init__()
        check_features(config)
        self.config = config
        w, p = config.width, config.patch_size
        self.conv1 = nn.Conv2d(config.in_chans, w, kernel_size=p, stride=p, bias=False)
        scale = w**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.positional_embedding = nn.Parameter(scale * torch.randn(config.tokens, w))
        self.ln_pre = LayerNorm(w)
        hidden = int(w * config.mlp_ratio)
        self.transformer = Transformer(w, config.layers, config.heads, hidden)
        self.ln_post = LayerNorm(w)
        self.proj = nn.Parameter(scale * torch.randn(w, config.output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        check_inputs(self, "torch", x)
        wanted = self.config.features
        out: dict[str, torch.Tensor] = {}

        def keep(name: str, value: torch.Tensor) -> bool:
            """Record ``value`` if asked for; True once every asked-for output is in."""
            if name in wanted:
                out[name] = value
            return bool(wanted) and len(out) == len(wanted)

        x = self.conv1(x).flatten(2).transpose(1, 2)  # (B, grid^2, width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        if keep("ln_pre", x):
            return {n: out[n] for n in wanted}
        for i, block in enumerate(self.transformer.resblocks):
            x = block(x)
            if keep(f"transformer.resblocks.{i}", x):
                return {n: out[n] for n in wanted}
        x = self.ln_post(x)
        if keep("ln_post", x):
            return {n: out[n] for n in wanted}
        x = x[:, 0] @ self.proj
        keep("proj", x)
        return {n: out[n] for n in wanted} if wanted else x
