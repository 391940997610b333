"""CLIP's ResNet image encoder, attribute names as OpenAI CLIP ``model.py``'s ``ModifiedResNet``
(``conv1..3`` / ``bn1..3`` stem, ``layerI.J.{conv1..3, bn1..3, downsample.0, downsample.1}``,
``attnpool.{positional_embedding, k_proj, q_proj, v_proj, c_proj}``), so the ``visual.*``
tensors of OpenAI's and open_clip's state dicts load as they are.

Two departures in form, none in numbers: the shortcut's average pool (OpenAI's
``downsample["-1"]``, no parameters) is applied by the Bottleneck before ``downsample`` (whose
items ``0`` / ``1`` keep their keys): a layer named ``-1`` has no spelling in Keras paths; and
``attnpool`` computes the query of the mean token only, the one output OpenAI keeps of its
``F.multi_head_attention_forward`` over every token (attention is per query, so the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.families.clip_resnet import (
    EXPANSION,
    ClipResNetConfig,
    has_downsample,
    stages,
)
from zoo.family import check_features
from zoo.layers.norm import BatchNorm2d
from zoo.registry import register_model
from zoo.tensor_format import Format
from zoo.validate import check_inputs

#: Bottleneck stays unexported: exports are unique across the families (torchvision's ResNet
#: has one too)
__all__ = ["AttentionPool2d", "ModifiedResNet"]


class _ReLU(nn.ReLU):
    """``nn.ReLU`` on a (B, C, H, W) map, declared channels-first for the parity harness (a
    map whose channels equal its sides cannot be told apart by shape)."""

    output_format = Format.CHANNELS_FIRST


class _Identity(nn.Identity):
    """``nn.Identity`` on a (B, C, H, W) map, declared channels-first (see ``_ReLU``)."""

    output_format = Format.CHANNELS_FIRST


class Bottleneck(nn.Module):
    """1 x 1 conv -> 3 x 3 conv -> average pool of ``stride`` (``avgpool``; Identity at 1) ->
    1 x 1 conv to 4 x planes, each with BatchNorm (ReLU on the first two); plus the shortcut
    (pooled by ``stride``, then ``downsample``: 1 x 1 conv and BatchNorm, where the shape
    changes), then ReLU. (B, inplanes, H, W) -> (B, 4 planes, H // stride, W // stride)."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.relu1 = _ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.relu2 = _ReLU()
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else _Identity()
        out = planes * EXPANSION
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = BatchNorm2d(out)
        self.relu3 = _ReLU()
        self.downsample = None
        if has_downsample(inplanes, planes, stride):
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, bias=False), BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x
        if self.downsample is not None:
            if self.stride > 1:  # OpenAI's downsample["-1"]
                identity = F.avg_pool2d(identity, self.stride)
            identity = self.downsample(identity)
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """Attention pooling: the map's tokens with their mean prepended, ``positional_embedding``
    added; the mean token attends (``num_heads`` heads, projections ``q_proj`` / ``k_proj`` /
    ``v_proj``) over all of them and ``c_proj`` maps the result.
    (B, embed_dim, H, W), H * W + 1 rows of ``positional_embedding`` -> (B, output_dim)."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.positional_embedding = nn.Parameter(
            torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5
        )
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q_proj(x[:, :1]).reshape(b, 1, heads, c // heads).transpose(1, 2)
        k = self.k_proj(x).reshape(b, n, heads, c // heads).transpose(1, 2)
        v = self.v_proj(x).reshape(b, n, heads, c // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, 1, hd)
        return self.c_proj(out.reshape(b, c))


@register_model("clip_resnet", "torch")
class ModifiedResNet(nn.Module):
    """CLIP ResNet image encoder.

    Input: (B, in_chans, H, W) channels-first, normalized (``CLIP_MEAN`` / ``CLIP_STD``),
    reducing to the trained (img_size // 32) grid at ``attnpool`` (sizes that floor to it run;
    others raise ValueError: the positional embedding is not resized).
    Output: the image embedding (B, output_dim). With ``config.features``: a dict of those
    outputs in that order (maps (B, C, H, W); ``attnpool`` (B, output_dim)).
    """

    def __init__(self, config: ClipResNetConfig) -> None:
        super().__init__()
        check_features(config)
        self.config = config
        half, w = config.width // 2, config.width
        self.conv1 = nn.Conv2d(config.in_chans, half, 3, stride=2, padding=1, bias=False)
        self.bn1 = BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, w, 3, padding=1, bias=False)
        self.bn3 = BatchNorm2d(w)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = _ReLU()
        for i, blocks in enumerate(stages(config), start=1):
            setattr(self, f"layer{i}", nn.Sequential(*(Bottleneck(*b) for b in blocks)))
        self.attnpool = AttentionPool2d(
            config.grid, config.embed_dim, config.heads, config.output_dim
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        check_inputs(self, "torch", x)
        wanted = self.config.features
        out: dict[str, torch.Tensor] = {}

        def keep(name: str, value: torch.Tensor) -> bool:
            """Record ``value`` if asked for; True once every asked-for output is in."""
            if name in wanted:
                out[name] = value
            return bool(wanted) and len(out) == len(wanted)

        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = self.relu(bn(conv(x)))
        x = self.avgpool(x)
        if keep("stem", x):
            return {n: out[n] for n in wanted}
        for i in range(1, 5):
            for j, block in enumerate(getattr(self, f"layer{i}")):
                x = block(x)
                if keep(f"layer{i}.{j}", x):
                    return {n: out[n] for n in wanted}
            if keep(f"layer{i}", x):
                return {n: out[n] for n in wanted}
        x = self.attnpool(x)
        keep("attnpool", x)
        return {n: out[n] for n in wanted} if wanted else x
