"""VGG checkpoint layouts.

``torchvision``
    torchvision's ``vgg16`` / ``vgg19`` (``_bn``) ``state_dict()``: the reference's own keys
    (``features.N``, ``classifier.0/3/6``). Its weights expect ImageNet mean / std input
    (``preprocessing="imagenet"``).
``keras_applications``
    ``keras.applications.VGG16`` / ``VGG19``'s layers (``block{s}_conv{k}``, ``fc1``, ``fc2``,
    ``predictions``; an ``include_top=False`` file has no dense layers: ``features_only``), as
    ``weight_convert.keras_applications`` reads them from a Keras 3 ``.weights.h5`` or a legacy
    ``.h5`` (kernels already in PyTorch's axis order there). ``fc1``'s rows follow Keras'
    (H, W, C) flatten where the reference's follow (C, H, W): a permutation by rule
    (``ValueMap``), exact both ways. Its weights expect Caffe input (``preprocessing="caffe"``,
    ``zoo.preprocessing``). No BatchNorm variants (keras.applications has none), and no
    adaptive pool: its Flatten takes block5_pool as it is, which the reference's 7 x 7 pool
    leaves unchanged at 224 x 224, the only input its dense layers take.

The architecture is solved from the shapes: BatchNorm tensors in ``features`` (1-D weights,
running statistics) make a ``_bn`` variant (so ``vgg19`` and ``vgg19_bn`` are told apart), the
convs' positions in ``features`` give the stages (a conv follows the previous one by 2 items,
3 with BatchNorm; by one more across a pool), their kernels the widths, classifier.0's width
over the last width the pool size.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from weight_convert.errors import LayoutError
from weight_convert.layouts._registry import LayoutSpec, register_layouts
from weight_convert.layouts._transforms import ValueMap
from weight_convert.layouts._vit import need
from zoo.configs import VARIANTS, match_variant
from zoo.families.vgg import VGGConfig

_FEATURE = re.compile(r"features\.(\d+)\.weight$")
_ITEM = re.compile(r"features\.(\d+)\.(weight|running_mean|running_var|num_batches_tracked)$")
_BLOCK = re.compile(r"block(\d+)_conv(\d+)\.(.+)$")


def _kernel(reference: Mapping[str, Any], key: str) -> tuple[int, int]:
    shape = tuple(need(reference, key).shape)
    if len(shape) != 4 or shape[2:] != (3, 3):
        raise LayoutError(f"{key} of shape {shape} is no 3x3 conv kernel")
    return int(shape[0]), int(shape[1])


def _stages(indexes: list[int], step: int) -> list[int]:
    """Convs per stage from the convs' positions in ``features`` (``step``: items per conv)."""
    if not indexes or indexes[0] != 0:
        raise LayoutError(f"features' first item is no conv (convs at {indexes[:4]})")
    depths = [1]
    for a, b in zip(indexes, indexes[1:], strict=False):
        if b - a == step:
            depths[-1] += 1
        elif b - a == step + 1:
            depths.append(1)
        else:
            raise LayoutError(f"convs at features.{a} and features.{b}: no VGG spacing")
    return depths


def _infer_vgg(reference: Mapping[str, Any]) -> tuple[VGGConfig, list[str]]:
    indexes = sorted(
        int(m.group(1))
        for k in reference
        if (m := _FEATURE.match(k)) and len(reference[k].shape) == 4
    )
    # a BatchNorm's tensors (its weight 1-D, its statistics) in features: vgg16_bn / vgg19_bn;
    # where they sit is held by the conv spacing below and every shape by the table
    batch_norm = any(
        (m := _ITEM.match(k)) and (m.group(2) != "weight" or len(reference[k].shape) == 1)
        for k in reference
    )
    depths = _stages(indexes, 3 if batch_norm else 2)
    kernels = [_kernel(reference, f"features.{i}.weight") for i in indexes]
    widths, start = [], 0
    for depth in depths:
        stage = {o for o, _ in kernels[start : start + depth]}
        if len(stage) != 1:
            raise LayoutError(f"a stage of convs of widths {sorted(stage)}: VGG has one per stage")
        widths.append(stage.pop())
        start += depth
    fields: dict[str, Any] = {}
    if "classifier.0.weight" in reference:
        hidden, flat = (int(s) for s in need(reference, "classifier.0.weight").shape)
        side = math.isqrt(flat // widths[-1]) if flat % widths[-1] == 0 else 0
        if side < 1 or widths[-1] * side * side != flat:
            raise LayoutError(
                f"classifier.0 takes {flat} features: not {widths[-1]} channels times a square map"
            )
        classes = int(need(reference, "classifier.6.weight").shape[0])
        fields = dict(pool_size=side, hidden=hidden, num_classes=classes)
    else:
        fields = dict(features_only=True)
    config = VGGConfig(
        in_chans=kernels[0][1],
        widths=tuple(widths),
        depths=tuple(depths),
        batch_norm=batch_norm,
        **fields,
    )
    variant = match_variant(config)
    if variant is not None:
        config = dataclasses.replace(config, dropout=VARIANTS[variant].config.dropout)
    return config, []


# --------------------------------------------------------------------------- keras.applications


@dataclasses.dataclass(frozen=True)
class _BlockNames:
    """keras.applications' ``block{s}_conv{k}`` (``s``, ``k`` from 1) <-> ``features.N`` (a
    tensor rule: the index depends on every stage's depth, which the state dict tells)."""

    def read(self, state: Mapping[str, Any]) -> dict[str, Any]:
        if any(k.startswith("features.") for k in state):
            raise LayoutError("keras.applications files name no tensor features.N")
        convs: dict[int, set[int]] = {}
        for key in state:
            if m := _BLOCK.match(key):
                convs.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        stages = sorted(convs)
        if stages != list(range(1, len(stages) + 1)):
            raise LayoutError(f"keras.applications blocks {stages} are not 1, 2, ...")
        for s in stages:
            if sorted(convs[s]) != list(range(1, len(convs[s]) + 1)):
                raise LayoutError(f"block{s}'s convs {sorted(convs[s])} are not 1, 2, ...")
        first, index = {}, 0
        for s in stages:
            first[s] = index
            index += 2 * len(convs[s]) + 1
        out = {}
        for key, value in state.items():
            m = _BLOCK.match(key)
            if m:
                s, k = int(m.group(1)), int(m.group(2))
                key = f"features.{first[s] + 2 * (k - 1)}.{m.group(3)}"
            out[key] = value
        return out

    def write(self, state: Mapping[str, Any]) -> dict[str, Any]:
        if any(k.startswith("features.") and ".running_" in k for k in state):
            raise LayoutError(
                "keras.applications has no VGG with BatchNorm (vgg16_bn / vgg19_bn): write "
                "the torchvision layout"
            )
        indexes = sorted({int(m.group(1)) for k in state if (m := _FEATURE.match(k))})
        names, s, k = {}, 1, 0
        for a, b in zip([None, *indexes[:-1]], indexes, strict=True):
            if a is not None and b - a != 2:
                s, k = s + 1, 0
            k += 1
            names[b] = f"block{s}_conv{k}"
        out = {}
        for key, value in state.items():
            parts = key.split(".")
            if parts[0] == "features":
                key = f"{names[int(parts[1])]}.{parts[2]}"
            out[key] = value
        return out


def _hwc_to_chw(x: np.ndarray) -> np.ndarray:
    """classifier.0's weight with columns in Keras' (H, W, C) flatten order -> (C, H, W)."""
    hidden, flat = x.shape
    side = 7  # keras.applications' block5_pool at 224 x 224, the only input its fc1 takes
    channels = flat // (side * side)
    return np.ascontiguousarray(
        x.reshape(hidden, side, side, channels).transpose(0, 3, 1, 2).reshape(hidden, flat)
    )


def _chw_to_hwc(x: np.ndarray) -> np.ndarray:
    hidden, flat = x.shape
    side = 7
    channels = flat // (side * side)
    return np.ascontiguousarray(
        x.reshape(hidden, channels, side, side).transpose(0, 2, 3, 1).reshape(hidden, flat)
    )


register_layouts(
    "vgg",
    _infer_vgg,
    [
        LayoutSpec(
            "torchvision",
            "vgg",
            (("features.", "features."), ("classifier.", "classifier.")),
            implies=(("preprocessing", "imagenet"),),
        ),
        LayoutSpec(
            "keras_applications",
            "vgg",
            (
                ("features.", "features."),
                ("classifier.0.", "fc1."),
                ("classifier.3.", "fc2."),
                ("classifier.6.", "predictions."),
            ),
            tensor_rules=(_BlockNames(),),
            value_maps=(ValueMap("classifier.0.weight", _hwc_to_chw, _chw_to_hwc),),
            implies=(("preprocessing", "caffe"),),
            notes=(
                "keras.applications weights: they expect Caffe input (RGB 0..255 -> BGR minus "
                "the mean; zoo.preprocessing), kept as preprocessing='caffe' in the config",
            ),
        ),
    ],
)
