"""Inception-v3 with torchvision's module tree and names (``Conv2d_1a_3x3`` .. ``Mixed_7c``,
``BasicConv2d``'s ``conv`` / ``bn``, ``fc``), so torchvision's ``inception_v3`` state dict (less
its ``AuxLogits``) and pytorch-fid's FID weights load as they are; ``config.fid`` swaps in
pytorch-fid's FIDInception pooling (``zoo.families.inception_v3``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.families.inception_v3 import (
    BN_EPS,
    IMAGENET_MEAN_STD,
    ConvSpec,
    InceptionV3Config,
    mixed_blocks,
    pool_mode,
    stem_convs,
)
from zoo.family import check_features
from zoo.features import FeatureTaps
from zoo.layers import BatchNorm2d, MaxPool2d
from zoo.registry import register_model
from zoo.tensor_format import Format
from zoo.validate import check_inputs

__all__ = ["BasicConv2d", "InceptionBlock", "InceptionV3", "resize_bilinear"]


def resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size) as pytorch-fid's ``InceptionV3`` resizes:
    ``F.interpolate(mode="bilinear", align_corners=False)``, antialiasing off (its default, and
    what pytorch-fid calls, so the features are its own). The ports compute the same taps
    (``zoo.interpolate.linear_taps``)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class BasicConv2d(nn.Module):
    """conv (no bias) -> bn (eps 0.001) -> ReLU. (B, cin, H, W) -> (B, cout, H', W')."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, spec: ConvSpec) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            spec.cin,
            spec.cout,
            spec.kernel,
            stride=spec.stride,
            padding=spec.padding,
            bias=False,
        )
        self.bn = BatchNorm2d(spec.cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def pool_branch(x: torch.Tensor, mode: str) -> torch.Tensor:
    """The 3x3 / 1 / 1 pooling before ``branch_pool`` (``pool_mode``)."""
    if mode == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=mode == "avg")


class InceptionBlock(nn.Module):
    """torchvision's InceptionA / B / C / D / E (``kind``), or pytorch-fid's FIDInception
    variant of A / C / E (``pool``): the branches' outputs concatenated on the channels in
    torchvision's order."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, kind: str, convs: list[ConvSpec], pool: str = "avg") -> None:
        super().__init__()
        self.kind, self.pool = kind, pool
        for spec in convs:
            setattr(self, spec.name, BasicConv2d(spec))

    def chain(self, x: torch.Tensor, *names: str) -> torch.Tensor:
        for name in names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, k = self.chain, self.kind
        if k == "A":
            outs = [
                c(x, "branch1x1"),
                c(x, "branch5x5_1", "branch5x5_2"),
                c(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                c(pool_branch(x, self.pool), "branch_pool"),
            ]
        elif k == "B":
            outs = [
                c(x, "branch3x3"),
                c(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ]
        elif k == "C":
            dbl = [f"branch7x7dbl_{i}" for i in range(1, 6)]
            outs = [
                c(x, "branch1x1"),
                c(x, "branch7x7_1", "branch7x7_2", "branch7x7_3"),
                c(x, *dbl),
                c(pool_branch(x, self.pool), "branch_pool"),
            ]
        elif k == "D":
            outs = [
                c(x, "branch3x3_1", "branch3x3_2"),
                c(x, *[f"branch7x7x3_{i}" for i in range(1, 5)]),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ]
        else:
            b3 = c(x, "branch3x3_1")
            d3 = c(x, "branch3x3dbl_1", "branch3x3dbl_2")
            outs = [
                c(x, "branch1x1"),
                torch.cat([c(b3, "branch3x3_2a"), c(b3, "branch3x3_2b")], 1),
                torch.cat([c(d3, "branch3x3dbl_3a"), c(d3, "branch3x3dbl_3b")], 1),
                c(pool_branch(x, self.pool), "branch_pool"),
            ]
        return torch.cat(outs, 1)


@register_model("inception_v3", "torch")
class InceptionV3(nn.Module):
    """torchvision's ``Inception3`` (``aux_logits=False``) or pytorch-fid's FID Inception, with
    pytorch-fid's input pipeline as options. Input (B, in_chans, H, W) channels-first (H, W >=
    75, or any size with ``resize_input``); output logits (B, num_classes), or with
    ``config.features`` a dict of those outputs in that order (``pool3``: (B, 2048), the FID
    features; the forward stops after the last one)."""

    def __init__(self, config: InceptionV3Config) -> None:
        super().__init__()
        check_features(config)
        self.config = config
        for spec in stem_convs(config):
            if isinstance(spec, str):
                setattr(self, spec, MaxPool2d(kernel_size=3, stride=2))
            else:
                setattr(self, spec.name, BasicConv2d(spec))
        for name, kind, convs in mixed_blocks(config):
            setattr(self, name, InceptionBlock(kind, convs, pool_mode(config, name)))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.num_features, config.num_classes)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """pytorch-fid's resize and [0, 1] -> [-1, 1], then torchvision's transform_input, as
        the config asks."""
        config = self.config
        if config.resize_input:
            x = resize_bilinear(x, config.resize_input)
        if config.normalize_input:
            x = 2 * x - 1
        if config.transform_input:
            x = torch.cat(
                [
                    torch.unsqueeze(x[:, i], 1) * (std / 0.5) + (mean - 0.5) / 0.5
                    for i, (mean, std) in enumerate(IMAGENET_MEAN_STD)
                ],
                1,
            )
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        check_inputs(self, "torch", x)
        taps = FeatureTaps(self.config.features)
        x = self.prepare(x)
        for spec in stem_convs(self.config):
            name = spec if isinstance(spec, str) else spec.name
            x = getattr(self, name)(x)
            if taps.take(name, x):
                return taps.outputs
        for name, _, _ in mixed_blocks(self.config):
            x = getattr(self, name)(x)
            if taps.take(name, x):
                return taps.outputs
        x = self.avgpool(x)
        if taps.take("avgpool", x):
            return taps.outputs
        x = torch.flatten(x, 1)
        if taps.take("pool3", x):
            return taps.outputs
        x = self.fc(self.dropout(x))
        if taps.take("fc", x) | taps.take("logits", x):
            return taps.outputs
        return x
