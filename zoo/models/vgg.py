"""VGG, module tree and names as torchvision's ``VGG`` (``features.N``, ``avgpool``,
``classifier.N``), so torchvision's ``vgg16`` / ``vgg19`` (``_bn``) state dicts load as they are
(strict). The ReLUs are not in place (torchvision's are): a returned conv feature keeps its
values."""

from __future__ import annotations

import torch
from torch import nn

from zoo.families.vgg import VGGConfig, feature_paths, names_at
from zoo.features import FeatureTaps
from zoo.registry import register_model
from zoo.tensor_format import Format
from zoo.validate import check_inputs

__all__ = ["VGG", "make_features"]


class _MapReLU(nn.ReLU):
    """``nn.ReLU`` on a map, declared channels-first for the parity harness (a (B, C, H, W)
    with C == H == W is otherwise ambiguous); the same module to the state dict."""

    output_format = Format.CHANNELS_FIRST


def make_features(config: VGGConfig) -> nn.Sequential:
    """``features``: per stage, Conv2d 3x3 pad 1 [+ BatchNorm2d] + ReLU per conv, then
    MaxPool2d 2x2 (floor)."""
    layers: list[nn.Module] = []
    channels = config.in_chans
    for width, depth in zip(config.widths, config.depths, strict=True):
        for _ in range(depth):
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(_MapReLU())
            channels = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


@register_model("vgg", "torch")
class VGG(nn.Module):
    """features -> avgpool (adaptive, ``pool_size`` square) -> flatten (C, H, W) -> classifier.

    Input: (B, in_chans, H, W) channels-first. Output: logits (B, num_classes); with
    ``config.features_only`` the last pool's map (B, C, h, w); with ``config.features`` a dict
    of those outputs (``zoo.families.vgg.feature_names``), maps (B, C, h, w), in the order
    asked, the layers after the last one not run.
    """

    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        self.config = config
        #: every feature name -> its module path (the parity harness' formats of aliases)
        self.feature_paths = feature_paths(config)
        self.features = make_features(config)
        if not config.features_only:
            p = config.pool_size
            self.avgpool = nn.AdaptiveAvgPool2d((p, p))
            self.classifier = nn.Sequential(
                nn.Linear(config.flat_features, config.hidden),
                nn.ReLU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, config.hidden),
                nn.ReLU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, config.num_classes),
            )

    def _stages(self):
        """(path, module) of every module in forward order; ``flatten`` before classifier.0."""
        for i, m in enumerate(self.features):
            yield f"features.{i}", m
        if not self.config.features_only:
            yield "avgpool", self.avgpool
            yield "flatten", lambda x: torch.flatten(x, 1)
            for i, m in enumerate(self.classifier):
                yield f"classifier.{i}", m

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        check_inputs(self, "torch", x)
        taps, at = FeatureTaps(self.config.features), names_at(self.config)
        for path, m in self._stages():
            x = m(x)
            if any([taps.take(name, x) for name in at.get(path, ())]):
                return taps.outputs
        return x
