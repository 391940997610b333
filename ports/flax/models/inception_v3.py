"""Inception-v3, Flax NNX port of ``zoo.models.inception_v3``: same module tree and attribute
names (``Mixed_5b.branch5x5_2.conv.kernel``, ``Conv2d_1a_3x3.bn.running_mean``), channels-last.
Convolutions pad explicitly as PyTorch, the pooling branches as PyTorch's ``avg_pool2d`` (zeros,
counted or not: ``pool_mode``) and ``max_pool2d`` (-inf), every BatchNorm is PyTorch's with eps
0.001 (``BatchNorm2d``). The input resize is pytorch-fid's bilinear one, as gathers with
PyTorch's float32 taps (``resize_bilinear``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers import BatchNorm2d, MaxPool2d
from ports.flax.layers.linear import Linear
from ports.flax.models.resnet import AdaptiveAvgPool2d
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


def _resize_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
    lo, hi, w_lo, w_hi = linear_taps(x.shape[axis], out_size)
    shape = [1] * 4
    shape[axis] = out_size
    w_lo = jnp.asarray(w_lo, x.dtype).reshape(shape)
    w_hi = jnp.asarray(w_hi, x.dtype).reshape(shape)
    return jnp.take(x, lo, axis=axis) * w_lo + jnp.take(x, hi, axis=axis) * w_hi


def resize_bilinear(x: jax.Array, size: int) -> jax.Array:
    """(B, H, W, C) -> (B, size, size, C) as pytorch-fid resizes (``F.interpolate(mode=
    "bilinear", align_corners=False)``, no antialiasing): gathers with PyTorch's float32 CPU
    taps (``zoo.interpolate.linear_taps``), along the width then the height, PyTorch's order
    (``jax.image.resize`` antialiases when downsizing and computes its own taps)."""
    return _resize_axis(_resize_axis(x, 2, size), 1, size)


def pool_branch(x: jax.Array, mode: str) -> jax.Array:
    """The 3x3 / 1 / 1 pooling before ``branch_pool``: "avg" (zero padding counted, as
    ``F.avg_pool2d``'s default), "avg_exclude_pad" (``count_include_pad=False``) or "max"
    (padded with -inf)."""
    pad = ((1, 1), (1, 1))
    if mode == "max":
        x = jnp.pad(x, ((0, 0), *pad, (0, 0)), constant_values=float("-inf"))
        return nnx.max_pool(x, (3, 3), strides=(1, 1), padding="VALID")
    return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=pad, count_include_pad=mode == "avg")


class BasicConv2d(nnx.Module):
    """conv (no bias, PyTorch's padding) -> bn (eps 0.001) -> ReLU, channels-last."""

    def __init__(self, spec: ConvSpec, *, rngs: nnx.Rngs) -> None:
        (ph, pw), s = spec.padding, spec.stride
        self.conv = nnx.Conv(
            spec.cin,
            spec.cout,
            spec.kernel,
            strides=(s, s),
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            rngs=rngs,
        )
        self.bn = BatchNorm2d(spec.cout, eps=BN_EPS, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.bn(self.conv(x)))


class InceptionBlock(nnx.Module):
    """torchvision's InceptionA .. E (``kind``) or pytorch-fid's FIDInception A / C / E
    (``pool``): the branches concatenated on the channels in torchvision's order."""

    def __init__(
        self, kind: str, convs: list[ConvSpec], pool: str = "avg", *, rngs: nnx.Rngs
    ) -> None:
        self.kind, self.pool = kind, pool
        for spec in convs:
            setattr(self, spec.name, BasicConv2d(spec, rngs=rngs))

    def chain(self, x: jax.Array, *names: str) -> jax.Array:
        for name in names:
            x = getattr(self, name)(x)
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
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
                nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID"),
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
                nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID"),
            ]
        else:
            b3 = c(x, "branch3x3_1")
            d3 = c(x, "branch3x3dbl_1", "branch3x3dbl_2")
            outs = [
                c(x, "branch1x1"),
                jnp.concatenate([c(b3, "branch3x3_2a"), c(b3, "branch3x3_2b")], axis=-1),
                jnp.concatenate([c(d3, "branch3x3dbl_3a"), c(d3, "branch3x3dbl_3b")], axis=-1),
                c(pool_branch(x, self.pool), "branch_pool"),
            ]
        return jnp.concatenate(outs, axis=-1)


@register_model("inception_v3", "flax")
class InceptionV3(nnx.Module):
    """torchvision's ``Inception3`` (no auxiliary head) or pytorch-fid's FID Inception, with
    pytorch-fid's input pipeline as options. Input (B, H, W, in_chans) channels-last; output
    logits (B, num_classes), or with ``config.features`` a dict of those outputs (maps
    channels-last; ``pool3`` (B, 2048)) in that order. The dropout before ``fc`` draws from
    ``rngs``' dropout stream in training mode."""

    def __init__(self, config: InceptionV3Config, *, rngs: nnx.Rngs) -> None:
        check_features(config)
        self.config = config
        for spec in stem_convs(config):
            if isinstance(spec, str):
                setattr(self, spec, MaxPool2d(3, 2))
            else:
                setattr(self, spec.name, BasicConv2d(spec, rngs=rngs))
        for name, kind, convs in mixed_blocks(config):
            setattr(self, name, InceptionBlock(kind, convs, pool_mode(config, name), rngs=rngs))
        self.avgpool = AdaptiveAvgPool2d()
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.fc = Linear(config.num_features, config.num_classes, rngs=rngs)

    def prepare(self, x: jax.Array) -> jax.Array:
        """pytorch-fid's resize and [0, 1] -> [-1, 1], then torchvision's transform_input."""
        config = self.config
        if config.resize_input:
            x = resize_bilinear(x, config.resize_input)
        if config.normalize_input:
            x = 2 * x - 1
        if config.transform_input:
            x = jnp.concatenate(
                [
                    x[..., i : i + 1] * (std / 0.5) + (mean - 0.5) / 0.5
                    for i, (mean, std) in enumerate(IMAGENET_MEAN_STD)
                ],
                axis=-1,
            )
        return x

    def __call__(self, x: jax.Array) -> jax.Array | dict[str, jax.Array]:
        check_inputs(self, "flax", x)
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
        x = x.reshape(x.shape[0], -1)
        if taps.take("pool3", x):
            return taps.outputs
        x = self.fc(self.dropout(x))
        if taps.take("fc", x) | taps.take("logits", x):
            return taps.outputs
        return x
