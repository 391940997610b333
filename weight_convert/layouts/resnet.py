"""ResNet checkpoint layouts.

``torchvision``
    ``torchvision.models.resnet18/34/50/101/152().state_dict()``: the reference's own keys
    (``conv1``, ``bn1``, ``layer{1..4}.{m}.conv{1..3}`` / ``bn{1..3}`` / ``downsample.{0,1}``,
    ``fc``), with every BatchNorm's ``running_mean``, ``running_var`` and int64
    ``num_batches_tracked``.
``timm``
    ``timm.create_model("resnet50").state_dict()`` and the other ``resnet*``: the same keys
    and shapes as torchvision's (checked against timm 1.x), so a file reads as either; detection
    names ``torchvision`` (the first registered) and says the file is identical under ``timm``.
    ``--layout timm`` writes the same tensors.

The architecture is solved from the shapes: the block kind (a ``conv3`` in ``layer1.0``:
Bottleneck), the blocks per stage (the ``layer{k}.{m}`` indexes, consecutive from 0), each
stage's ``planes`` (its first block's ``conv1`` output channels), the input channels (``conv1``)
and the classes (``fc``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from weight_convert.errors import LayoutError
from weight_convert.layouts._registry import LayoutSpec, register_layouts
from weight_convert.layouts._vit import need
from zoo.families.resnet import ResNetConfig

_BLOCK = re.compile(r"layer([1-4])\.(\d+)\.")

#: the reference's prefixes, kept as they are in both layouts
_RULES = tuple(
    (p, p) for p in ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.", "fc.")
)


def _blocks_per_stage(reference: Mapping[str, Any]) -> tuple[int, int, int, int]:
    found: dict[int, set[int]] = {k: set() for k in range(1, 5)}
    for key in reference:
        m = _BLOCK.match(key)
        if m:
            found[int(m.group(1))].add(int(m.group(2)))
    counts = []
    for k, indexes in found.items():
        if not indexes or indexes != set(range(len(indexes))):
            raise LayoutError(f"layer{k}'s blocks are not numbered 0..n-1: {sorted(indexes)}")
        counts.append(len(indexes))
    return tuple(counts)  # type: ignore[return-value]


def _infer_resnet(reference: Mapping[str, Any]) -> tuple[ResNetConfig, list[str]]:
    stem = tuple(need(reference, "conv1.weight").shape)
    if len(stem) != 4 or stem[2:] != (7, 7):
        raise LayoutError(f"conv1.weight of shape {stem} is no 7x7 conv kernel")
    layers = _blocks_per_stage(reference)
    block = "bottleneck" if "layer1.0.conv3.weight" in reference else "basic"
    planes = tuple(int(need(reference, f"layer{k}.0.conv1.weight").shape[0]) for k in range(1, 5))
    classes = int(need(reference, "fc.weight").shape[0])
    config = ResNetConfig(
        block=block, layers=layers, planes=planes, in_chans=int(stem[1]), num_classes=classes
    )
    if planes[0] != stem[0]:
        raise LayoutError(f"conv1 gives {stem[0]} channels but layer1's blocks take {planes[0]}")
    return config, []


register_layouts(
    "resnet",
    _infer_resnet,
    [
        LayoutSpec(
            "torchvision",
            "resnet",
            _RULES,
            notes=("torchvision's and timm's resnet* state dicts have the same keys and shapes",),
        ),
        LayoutSpec("timm", "resnet", _RULES),
    ],
)
