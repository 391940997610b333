"""Inception-v3, Keras 3 port of ``zoo.models.inception_v3``: same module tree and names
(``root/Mixed_5b/branch5x5_2/conv/kernel``, ``root/Conv2d_1a_3x3/bn/moving_mean``),
channels-last, ``keras.ops`` only. Convolutions pad explicitly and symmetrically as PyTorch
(``(1, 7)`` kernels with ``(0, 3)``), the pooling branches pad as PyTorch's ``avg_pool2d``
(zeros, counted or not: ``pool_mode``) and ``max_pool2d`` (-inf), every BatchNorm is PyTorch's
with eps 0.001 (``BatchNorm2d``). The input resize is pytorch-fid's bilinear one, as gathers
with PyTorch's float32 taps (``resize_bilinear``)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ports.keras.layers import BatchNorm2d, MaxPool2d
from ports.keras.layers.dense import Dense
from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
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
from zoo.interpolate import linear_taps
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["BasicConv2d", "InceptionBlock", "InceptionV3", "pool_branch", "resize_bilinear"]


def _resize_axis(x: Tensor, axis: int, out_size: int) -> Tensor:
    lo, hi, w_lo, w_hi = linear_taps(x.shape[axis], out_size)
    shape = [1] * 4
    shape[axis] = out_size
    dtype = keras.backend.standardize_dtype(x.dtype)
    w_lo = ops.reshape(ops.convert_to_tensor(w_lo.astype(dtype)), shape)
    w_hi = ops.reshape(ops.convert_to_tensor(w_hi.astype(dtype)), shape)
    return ops.take(x, lo, axis=axis) * w_lo + ops.take(x, hi, axis=axis) * w_hi


def resize_bilinear(x: Tensor, size: int) -> Tensor:
    """(B, H, W, C) -> (B, size, size, C) as pytorch-fid resizes (``F.interpolate(mode=
    "bilinear", align_corners=False)``, no antialiasing), H and W known when traced: gathers
    with PyTorch's float32 CPU taps (``zoo.interpolate.linear_taps``), along the width then the
    height, PyTorch's order (no backend resize kernel: those differ in their taps and
    antialiasing)."""
    if x.shape[1] is None or x.shape[2] is None:
        raise ValueError(f"resize_bilinear needs the image's height and width, got {x.shape}")
    return _resize_axis(_resize_axis(x, 2, size), 1, size)


def pool_branch(x: Tensor, mode: str) -> Tensor:
    """The 3x3 / 1 / 1 pooling before ``branch_pool``: "avg" (zero padding counted, as
    ``F.avg_pool2d``'s default), "avg_exclude_pad" (``count_include_pad=False``: each window
    averages its pixels inside the map) or "max" (padded with -inf)."""
    if mode == "max":
        x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=float("-inf"))
        return ops.max_pool(x, 3, 1, padding="valid")
    mean = ops.average_pool(ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), 3, 1, padding="valid")
    if mode == "avg":
        return mean
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None:
        raise ValueError(f"the FID pooling needs the map's height and width, got {x.shape}")
    dtype = keras.backend.standardize_dtype(x.dtype)
    return mean * ops.convert_to_tensor(_count_scale(h, w).astype(dtype))


def _count_scale(h: int, w: int) -> np.ndarray:
    """9 / (pixels of each 3x3 window inside an h x w map), (1, h, w, 1)."""

    def inside(n: int) -> np.ndarray:
        count = np.full(n, 3.0)
        count[0] -= 1
        count[-1] -= 1
        return np.maximum(count, 1.0) if n > 1 else np.ones(1)

    return (9.0 / np.outer(inside(h), inside(w)))[None, :, :, None]


@keras.saving.register_keras_serializable(package="vit_zoo")
class BasicConv2d(keras.layers.Layer):
    """conv (no bias, PyTorch's padding) -> bn (eps 0.001) -> ReLU, channels-last."""

    def __init__(self, spec: ConvSpec, **kwargs) -> None:
        kwargs.setdefault("name", spec.name)
        super().__init__(**kwargs)
        self.spec = spec
        self.conv = keras.layers.Conv2D(
            spec.cout, spec.kernel, strides=spec.stride, use_bias=False, name="conv"
        )
        self.bn = BatchNorm2d(spec.cout, eps=BN_EPS, name="bn")

    def build(self, input_shape: tuple) -> None:
        self.conv.build((None, None, None, self.spec.cin))
        self.bn.build((None, None, None, self.spec.cout))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        ph, pw = self.spec.padding
        if ph or pw:
            x = ops.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        return ops.relu(self.bn(self.conv(x), training=training))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        b, h, w, _ = input_shape
        s = self.spec
        side = [
            None if d is None else (d + 2 * p - k) // s.stride + 1
            for d, p, k in zip((h, w), s.padding, s.kernel, strict=True)
        ]
        return (b, *side, s.cout)


@keras.saving.register_keras_serializable(package="vit_zoo")
class InceptionBlock(keras.layers.Layer):
    """torchvision's InceptionA .. E (``kind``) or pytorch-fid's FIDInception A / C / E
    (``pool``): the branches concatenated on the channels in torchvision's order."""

    def __init__(self, kind: str, convs: list[ConvSpec], pool: str = "avg", **kwargs) -> None:
        super().__init__(**kwargs)
        self.kind, self.pool, self.convs = kind, pool, convs
        for spec in convs:
            setattr(self, spec.name, BasicConv2d(spec))

    def build(self, input_shape: tuple) -> None:
        for spec in self.convs:
            getattr(self, spec.name).build((None, None, None, spec.cin))

    def chain(self, x: Tensor, training, *names: str) -> Tensor:
        for name in names:
            x = getattr(self, name)(x, training=training)
        return x

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        t, k = training, self.kind

        def c(v, *names):
            return self.chain(v, t, *names)

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
                ops.max_pool(x, 3, 2, padding="valid"),
            ]
        elif k == "C":
            outs = [
                c(x, "branch1x1"),
                c(x, "branch7x7_1", "branch7x7_2", "branch7x7_3"),
                c(x, *[f"branch7x7dbl_{i}" for i in range(1, 6)]),
                c(pool_branch(x, self.pool), "branch_pool"),
            ]
        elif k == "D":
            outs = [
                c(x, "branch3x3_1", "branch3x3_2"),
                c(x, *[f"branch7x7x3_{i}" for i in range(1, 5)]),
                ops.max_pool(x, 3, 2, padding="valid"),
            ]
        else:
            b3 = c(x, "branch3x3_1")
            d3 = c(x, "branch3x3dbl_1", "branch3x3dbl_2")
            outs = [
                c(x, "branch1x1"),
                ops.concatenate([c(b3, "branch3x3_2a"), c(b3, "branch3x3_2b")], axis=-1),
                ops.concatenate([c(d3, "branch3x3dbl_3a"), c(d3, "branch3x3dbl_3b")], axis=-1),
                c(pool_branch(x, self.pool), "branch_pool"),
            ]
        return ops.concatenate(outs, axis=-1)


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("inception_v3", "keras")
class InceptionV3(ZooModel):
    """torchvision's ``Inception3`` (no auxiliary head) or pytorch-fid's FID Inception, with
    pytorch-fid's input pipeline as options. Input (B, H, W, in_chans) channels-last; output
    logits (B, num_classes), or with ``config.features`` a dict of those outputs (maps
    channels-last; ``pool3`` (B, 2048)) in that order."""

    def __init__(self, config: InceptionV3Config, **kwargs) -> None:
        super().__init__(**kwargs)
        check_features(config)
        self.config = config
        for spec in stem_convs(config):
            if isinstance(spec, str):
                setattr(self, spec, MaxPool2d(3, 2, name=spec))
            else:
                setattr(self, spec.name, BasicConv2d(spec))
        for name, kind, convs in mixed_blocks(config):
            setattr(self, name, InceptionBlock(kind, convs, pool_mode(config, name), name=name))
        self.avgpool = keras.layers.GlobalAveragePooling2D(keepdims=True, name="avgpool")
        self.dropout = keras.layers.Dropout(config.dropout, name="dropout")
        self.fc = Dense(config.num_classes, name="fc")

    def build(self, input_shape: tuple) -> None:
        for spec in stem_convs(self.config):
            if not isinstance(spec, str):
                getattr(self, spec.name).build((None, None, None, spec.cin))
        for name, _, convs in mixed_blocks(self.config):
            getattr(self, name).build((None, None, None, convs[0].cin))
        self.fc.build((None, self.config.num_features))

    def prepare(self, x: Tensor) -> Tensor:
        """pytorch-fid's resize and [0, 1] -> [-1, 1], then torchvision's transform_input."""
        config = self.config
        if config.resize_input:
            x = resize_bilinear(x, config.resize_input)
        if config.normalize_input:
            x = 2 * x - 1
        if config.transform_input:
            x = ops.concatenate(
                [
                    x[..., i : i + 1] * (std / 0.5) + (mean - 0.5) / 0.5
                    for i, (mean, std) in enumerate(IMAGENET_MEAN_STD)
                ],
                axis=-1,
            )
        return x

    def call(self, x: Tensor, training: bool | None = None) -> Tensor | dict[str, Tensor]:
        check_inputs(self, "keras", x)
        taps = FeatureTaps(self.config.features)
        x = self.prepare(x)
        for spec in stem_convs(self.config):
            name = spec if isinstance(spec, str) else spec.name
            layer = getattr(self, name)
            x = layer(x) if isinstance(spec, str) else layer(x, training=training)
            if taps.take(name, x):
                return taps.outputs
        for name, _, _ in mixed_blocks(self.config):
            x = getattr(self, name)(x, training=training)
            if taps.take(name, x):
                return taps.outputs
        x = self.avgpool(x)
        if taps.take("avgpool", x):
            return taps.outputs
        x = ops.reshape(x, (-1, self.config.num_features))
        if taps.take("pool3", x):
            return taps.outputs
        x = self.fc(self.dropout(x, training=training))
        if taps.take("fc", x) | taps.take("logits", x):
            return taps.outputs
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.config.num_classes)
