"""MNIST ConvNet checkpoint layout.

``official``
    pytorch/examples ``mnist/main.py``'s ``Net`` (``--save-model`` writes its flat
    ``state_dict()`` as ``mnist_cnn.pt``): ``conv1.*``, ``conv2.*``, ``fc1.*``, ``fc2.*``, the
    reference's own keys.

The architecture is solved from the shapes: the channels from the conv kernels, the pooled map
from fc1's input width over conv2's channels (a square side), the image size as the even one
that pools to it (the odd one above it pools to the same map and runs too). The ports flatten the
pooled map in the reference's (C, H, W) order, so fc1 converts as every linear layer does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from weight_convert.errors import LayoutError
from weight_convert.layouts._registry import LayoutSpec, register_layouts
from weight_convert.layouts._vit import need
from zoo.configs import VARIANTS, match_variant
from zoo.families.convnet import ConvNetConfig


def _kernel(reference: Mapping[str, Any], key: str) -> tuple[int, int]:
    """(out, in) channels of a 3x3 conv kernel."""
    shape = tuple(need(reference, key).shape)
    if len(shape) != 4 or shape[2:] != (3, 3):
        raise LayoutError(f"{key} of shape {shape} is no 3x3 conv kernel")
    return int(shape[0]), int(shape[1])


def _infer_convnet(reference: Mapping[str, Any]) -> tuple[ConvNetConfig, list[str]]:
    c1, in_chans = _kernel(reference, "conv1.weight")
    c2, _ = _kernel(reference, "conv2.weight")
    hidden, flat = (int(s) for s in need(reference, "fc1.weight").shape)
    classes = int(need(reference, "fc2.weight").shape[0])
    side = math.isqrt(flat // c2) if flat % c2 == 0 else 0
    if side < 1 or c2 * side * side != flat:
        raise LayoutError(
            f"fc1 takes {flat} features: not {c2} channels (conv2's) times a square map"
        )
    config = ConvNetConfig(
        in_chans=in_chans,
        channels=(c1, c2),
        hidden=hidden,
        num_classes=classes,
        img_size=2 * side + 4,
    )
    variant = match_variant(config)
    if variant is not None:  # the variant's training settings
        base = VARIANTS[variant].config
        config = dataclasses.replace(
            config, dropout1_rate=base.dropout1_rate, dropout2_rate=base.dropout2_rate
        )
    return config, []


register_layouts(
    "convnet",
    _infer_convnet,
    [
        LayoutSpec(
            "official",
            "convnet",
            (("conv1.", "conv1."), ("conv2.", "conv2."), ("fc1.", "fc1."), ("fc2.", "fc2.")),
        )
    ],
)
