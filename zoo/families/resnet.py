"""ResNet (He et al. 2015, torchvision's v1.5: the stride on the Bottleneck's 3x3 conv): config,
variants, state-dict table, inputs, feature names. Framework-free.

Module tree and names as torchvision's ``ResNet``: ``conv1`` (7x7, stride 2), ``bn1``, ``relu``,
``maxpool`` (3x3, stride 2, padding 1: PyTorch pads with -inf), ``layer1`` .. ``layer4`` of
``BasicBlock`` (``conv1``, ``bn1``, ``relu``, ``conv2``, ``bn2``) or ``Bottleneck`` (``conv1`` 1x1,
``conv2`` 3x3, ``conv3`` 1x1, ``bn1..3``, ``relu``; expansion 4) with ``downsample.0`` (1x1
conv) / ``downsample.1`` (BatchNorm) where the shape changes, ``avgpool`` (global), ``fc``.
timm's ``resnet*`` have the same tensors under the same names (``weight_convert.layouts.resnet``).
Every BatchNorm is PyTorch's (eps 1e-5, momentum 0.1): ``ports.*.layers.BatchNorm2d``.

``features``: module paths the forward returns instead of the logits (``FEATURES`` below).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from zoo import shape_table as T
from zoo.config_checks import ConfigError, positive
from zoo.family import HEAD, NOT_ARCH, Family, Input, image_input, register_family, register_variant

__all__ = [
    "EXPANSION",
    "ResNetConfig",
    "block_has_downsample",
    "feature_names",
]

#: output channels over ``planes`` of each block kind
EXPANSION = {"basic": 1, "bottleneck": 4}


@dataclass(frozen=True)
class ResNetConfig:
    """torchvision's ``ResNet(block, layers)``.

    Input (reference): (B, in_chans, H, W), any H, W >= 1 (the pooling is global). Output:
    logits (B, num_classes), or with ``features`` a dict of the named module outputs, in the
    order of ``features`` (reference (B, C, H, W), ports (B, H, W, C); ``fc``: (B,
    num_classes)), the forward stopping after the last one.
    """

    #: "basic" (BasicBlock: ResNet-18 / 34) or "bottleneck" (Bottleneck: ResNet-50 / 101 / 152)
    block: str = "bottleneck"
    #: blocks per stage (layer1 .. layer4)
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    #: each stage's ``planes`` (its 3x3 convs' width; outputs are ``planes * EXPANSION``);
    #: the stem's width is ``planes[0]``, as in torchvision (64)
    planes: tuple[int, int, int, int] = (64, 128, 256, 512)
    in_chans: int = 3
    num_classes: int = field(default=1000, metadata=HEAD)
    #: the example input's side (any size runs: the pooling is global)
    img_size: int = field(default=224, metadata=NOT_ARCH)
    #: module paths to return (``feature_names``); () returns the logits
    features: tuple[str, ...] = field(default=(), metadata=NOT_ARCH)

    @property
    def family(self) -> str:
        return "resnet"

    @property
    def expansion(self) -> int:
        return EXPANSION[self.block]

    @property
    def num_features(self) -> int:
        """fc's input width: layer4's output channels."""
        return self.planes[3] * self.expansion

    def stages(self) -> list[tuple[int, int, int, int]]:
        """(in channels, planes, blocks, stride) of layer1 .. layer4."""
        out, inplanes = [], self.planes[0]
        for i, (planes, blocks) in enumerate(zip(self.planes, self.layers, strict=True)):
            out.append((inplanes, planes, blocks, 1 if i == 0 else 2))
            inplanes = planes * self.expansion
        return out


def block_has_downsample(inplanes: int, planes: int, stride: int, expansion: int) -> bool:
    """torchvision's rule: a 1x1 conv + BatchNorm on the shortcut where the shape changes."""
    return stride != 1 or inplanes != planes * expansion


def feature_names(config: ResNetConfig) -> tuple[str, ...]:
    """Every name ``features`` accepts, in forward order: the stem's ``conv1``, ``bn1``,
    ``relu``, ``maxpool``; each block ``layerK.M`` then its stage ``layerK`` (the same map as
    its last block); ``avgpool`` ((B, C, 1, 1) / (B, 1, 1, C)); ``fc`` (the logits)."""
    names = ["conv1", "bn1", "relu", "maxpool"]
    for k, blocks in enumerate(config.layers, start=1):
        names += [f"layer{k}.{m}" for m in range(blocks)] + [f"layer{k}"]
    return (*names, "avgpool", "fc")


def _block(out: T.Shapes, key: str, config: ResNetConfig, inplanes: int, planes: int, stride):
    width, expansion = planes, config.expansion
    if config.block == "basic":
        T.conv(out, f"{key}.conv1", inplanes, width, 3, bias=False)
        T.batchnorm(out, f"{key}.bn1", width)
        T.conv(out, f"{key}.conv2", width, width, 3, bias=False)
        T.batchnorm(out, f"{key}.bn2", width)
    else:
        T.conv(out, f"{key}.conv1", inplanes, width, 1, bias=False)
        T.batchnorm(out, f"{key}.bn1", width)
        T.conv(out, f"{key}.conv2", width, width, 3, bias=False)
        T.batchnorm(out, f"{key}.bn2", width)
        T.conv(out, f"{key}.conv3", width, planes * expansion, 1, bias=False)
        T.batchnorm(out, f"{key}.bn3", planes * expansion)
    if block_has_downsample(inplanes, planes, stride, expansion):
        T.conv(out, f"{key}.downsample.0", inplanes, planes * expansion, 1, bias=False)
        T.batchnorm(out, f"{key}.downsample.1", planes * expansion)


def _shapes(config: ResNetConfig) -> T.Shapes:
    out: T.Shapes = {}
    T.conv(out, "conv1", config.in_chans, config.planes[0], 7, bias=False)
    T.batchnorm(out, "bn1", config.planes[0])
    for k, (inplanes, planes, blocks, stride) in enumerate(config.stages(), start=1):
        for m in range(blocks):
            first = m == 0
            _block(
                out,
                f"layer{k}.{m}",
                config,
                inplanes if first else planes * config.expansion,
                planes,
                stride if first else 1,
            )
    T.linear(out, "fc", config.num_features, config.num_classes)
    return out


def _validate(config: ResNetConfig) -> None:
    if config.block not in EXPANSION:
        raise ConfigError(f"config field block: {config.block!r} is not one of {list(EXPANSION)}")
    if len(config.layers) != 4 or len(config.planes) != 4:
        raise ConfigError("config fields layers / planes: four stages each")
    positive(config, "layers", "planes", "in_chans", "num_classes")


def _inputs(config: ResNetConfig, shape: Sequence[int] | None) -> tuple[Input, ...]:
    return (image_input(config, shape, rank=2),)


register_family(
    Family(
        name="resnet",
        config=ResNetConfig,
        features=feature_names,
        model="ResNet",
        shapes=_shapes,
        inputs=_inputs,
        validate=_validate,
        description="torchvision's ResNet-18/34/50/101/152 (BasicBlock / Bottleneck, BatchNorm)",
        # Bottleneck (every block kind of shortcut: layer1.0's expansion downsample, layer1.1's
        # identity, strided stages); the suite's "basic" case runs BasicBlock on the same widths
        tiny=ResNetConfig(layers=(2, 1, 1, 1), planes=(4, 8, 8, 16), num_classes=10, img_size=32),
    )
)

_VARIANTS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
for _name, (_kind, _layers) in _VARIANTS.items():
    register_variant(
        _name,
        ResNetConfig(block=_kind, layers=_layers),
        f"torchvision / timm {_name}: {_kind} blocks {list(_layers)}, ImageNet-1k head",
    )
