"""ResNet with torchvision's module tree and names (``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1`` .. ``layer4`` of ``BasicBlock`` / ``Bottleneck`` with ``downsample.0/1``,
``avgpool``, ``fc``), so torchvision's and timm's ``resnet*`` state dicts load as they are."""

from __future__ import annotations

import torch
from torch import nn

from zoo.families.resnet import ResNetConfig, block_has_downsample
from zoo.family import check_features
from zoo.layers import BatchNorm2d, MaxPool2d
from zoo.registry import register_model
from zoo.tensor_format import Format
from zoo.validate import check_inputs

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


class ReLU(nn.ReLU):
    """``nn.ReLU`` (no state) declaring its output channels-first, so the parity harness
    compares it unambiguously where C, H and W are equal (``output_format``)."""

    output_format = Format.CHANNELS_FIRST


def _conv(i: int, o: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, k, stride=stride, padding=k // 2, bias=False)


def _downsample(inplanes: int, out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_conv(inplanes, out, 1, stride), BatchNorm2d(out))


class BasicBlock(nn.Module):
    """conv1 (3x3, stride) -> bn1 -> relu -> conv2 (3x3) -> bn2, plus the shortcut
    (``downsample`` where the shape changes), then relu. (B, inplanes, H, W) ->
    (B, planes, H / stride, W / stride)."""

    expansion = 1
    output_format = Format.CHANNELS_FIRST

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 3, stride)
        self.bn1 = BatchNorm2d(planes)
        self.relu = ReLU()
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = (
            _downsample(inplanes, planes, stride)
            if block_has_downsample(inplanes, planes, stride, 1)
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """conv1 (1x1) -> bn1 -> relu -> conv2 (3x3, stride: torchvision's v1.5) -> bn2 -> relu ->
    conv3 (1x1, planes * 4) -> bn3, plus the shortcut, then relu. (B, inplanes, H, W) ->
    (B, 4 * planes, H / stride, W / stride)."""

    expansion = 4
    output_format = Format.CHANNELS_FIRST

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = _conv(inplanes, planes, 1)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = BatchNorm2d(planes)
        self.conv3 = _conv(planes, out, 1)
        self.bn3 = BatchNorm2d(out)
        self.relu = ReLU()
        self.downsample = (
            _downsample(inplanes, out, stride)
            if block_has_downsample(inplanes, planes, stride, 4)
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


@register_model("resnet", "torch")
class ResNet(nn.Module):
    """torchvision's ``ResNet``. Input (B, in_chans, H, W) channels-first; output logits
    (B, num_classes), or with ``config.features`` a dict of those module outputs in that order
    (the forward stops after the last one)."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        check_features(config)
        self.config = config
        block = BLOCKS[config.block]
        stem = config.planes[0]
        self.conv1 = nn.Conv2d(config.in_chans, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = BatchNorm2d(stem)
        self.relu = ReLU()
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)
        for k, (inplanes, planes, blocks, stride) in enumerate(config.stages(), start=1):
            items = [block(inplanes, planes, stride)]
            items += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{k}", nn.Sequential(*items))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(config.num_features, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        check_inputs(self, "torch", x)
        wanted = set(self.config.features)
        found: dict[str, torch.Tensor] = {}

        def keep(name: str, value: torch.Tensor) -> bool:
            """Record ``value`` if wanted; True once every wanted output is in."""
            if name in wanted:
                found[name] = value
            return bool(wanted) and len(found) == len(wanted)

        steps = [("conv1", self.conv1), ("bn1", self.bn1), ("relu", self.relu)]
        for name, module in [*steps, ("maxpool", self.maxpool)]:
            x = module(x)
            if keep(name, x):
                return self._ordered(found)
        for k in range(1, 5):
            for m, block in enumerate(getattr(self, f"layer{k}")):
                x = block(x)
                if keep(f"layer{k}.{m}", x):
                    return self._ordered(found)
            if keep(f"layer{k}", x):
                return self._ordered(found)
        x = self.avgpool(x)
        if keep("avgpool", x):
            return self._ordered(found)
        x = self.fc(torch.flatten(x, 1))
        if keep("fc", x):
            return self._ordered(found)
        return x

    def _ordered(self, found: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: found[name] for name in self.config.features}
