"""ResNet, Flax NNX port of ``zoo.models.resnet``: same module tree and attribute names
(``layer1.0.conv1.kernel``, ``layer1.0.downsample.1.running_mean``), channels-last.
Convolutions pad as PyTorch does (explicit symmetric padding), the max-pool with -inf
(``ports.flax.layers.MaxPool2d``), every BatchNorm is PyTorch's (``BatchNorm2d``: eps 1e-5,
momentum 0.1, ``nnx.BatchStat`` running statistics updated after ``model.train()``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers import BatchNorm2d, MaxPool2d
from ports.flax.layers.linear import Linear
from ports.flax.layers.pool import ReLU
from zoo.families.resnet import ResNetConfig, block_has_downsample
from zoo.family import check_features
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["AdaptiveAvgPool2d", "BasicBlock", "Bottleneck", "ResNet"]


def _conv(i: int, o: int, k: int, stride: int = 1, *, rngs: nnx.Rngs) -> nnx.Conv:
    """``nn.Conv2d(i, o, k, stride, padding=k // 2, bias=False)``."""
    p = k // 2
    return nnx.Conv(
        i, o, (k, k), strides=(stride, stride), padding=((p, p), (p, p)), use_bias=False, rngs=rngs
    )


class AdaptiveAvgPool2d(nnx.Module):
    """``nn.AdaptiveAvgPool2d((1, 1))`` channels-last: (B, H, W, C) -> (B, 1, 1, C)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.mean(x, axis=(1, 2), keepdims=True)


class _Block(nnx.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, *, rngs: nnx.Rngs) -> None:
        out = planes * self.expansion
        shortcut = block_has_downsample(inplanes, planes, stride, self.expansion)
        self.downsample = (
            nnx.List([_conv(inplanes, out, 1, stride, rngs=rngs), BatchNorm2d(out, rngs=rngs)])
            if shortcut
            else None
        )
        self.relu = ReLU()

    def shortcut(self, x: jax.Array) -> jax.Array:
        if self.downsample is None:
            return x
        conv, bn = self.downsample
        return bn(conv(x))


class BasicBlock(_Block):
    """conv1 (3x3, stride) -> bn1 -> relu -> conv2 (3x3) -> bn2, plus the shortcut, then relu.
    (B, H, W, inplanes) -> (B, H / stride, W / stride, planes)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, rngs: nnx.Rngs) -> None:
        super().__init__(inplanes, planes, stride, rngs=rngs)
        self.conv1 = _conv(inplanes, planes, 3, stride, rngs=rngs)
        self.bn1 = BatchNorm2d(planes, rngs=rngs)
        self.conv2 = _conv(planes, planes, 3, rngs=rngs)
        self.bn2 = BatchNorm2d(planes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        identity = self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(_Block):
    """conv1 (1x1) -> bn1 -> relu -> conv2 (3x3, stride) -> bn2 -> relu -> conv3 (1x1,
    4 * planes) -> bn3, plus the shortcut, then relu. (B, H, W, inplanes) ->
    (B, H / stride, W / stride, 4 * planes)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, rngs: nnx.Rngs) -> None:
        super().__init__(inplanes, planes, stride, rngs=rngs)
        self.conv1 = _conv(inplanes, planes, 1, rngs=rngs)
        self.bn1 = BatchNorm2d(planes, rngs=rngs)
        self.conv2 = _conv(planes, planes, 3, stride, rngs=rngs)
        self.bn2 = BatchNorm2d(planes, rngs=rngs)
        self.conv3 = _conv(planes, planes * 4, 1, rngs=rngs)
        self.bn3 = BatchNorm2d(planes * 4, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        identity = self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


@register_model("resnet", "flax")
class ResNet(nnx.Module):
    """torchvision's ``ResNet``. Input (B, H, W, in_chans) channels-last, any H, W; output
    logits (B, num_classes), or with ``config.features`` a dict of those module outputs
    (channels-last maps) in that order (the forward stops after the last one). Training mode
    (``model.train()``): batch statistics, running statistics updated as PyTorch does."""

    def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs) -> None:
        check_features(config)
        self.config = config
        block = BLOCKS[config.block]
        self.conv1 = nnx.Conv(
            config.in_chans,
            config.planes[0],
            (7, 7),
            strides=(2, 2),
            padding=((3, 3), (3, 3)),
            use_bias=False,
            rngs=rngs,
        )
        self.bn1 = BatchNorm2d(config.planes[0], rngs=rngs)
        self.relu = ReLU()
        self.maxpool = MaxPool2d(3, 2, 1)
        for k, (inplanes, planes, blocks, stride) in enumerate(config.stages(), start=1):
            out = planes * block.expansion
            items = [block(inplanes, planes, stride, rngs=rngs)]
            items += [block(out, planes, rngs=rngs) for _ in range(1, blocks)]
            setattr(self, f"layer{k}", nnx.List(items))
        self.avgpool = AdaptiveAvgPool2d()
        self.fc = Linear(config.num_features, config.num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array | dict[str, jax.Array]:
        check_inputs(self, "flax", x)
        wanted = set(self.config.features)
        found: dict[str, jax.Array] = {}

        def keep(name: str, value: jax.Array) -> bool:
            if name in wanted:
                found[name] = value
            return bool(wanted) and len(found) == len(wanted)

        for name in ("conv1", "bn1", "relu", "maxpool"):
            x = getattr(self, name)(x)
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
        x = self.fc(x.reshape(x.shape[0], -1))
        if keep("fc", x):
            return self._ordered(found)
        return x

    def _ordered(self, found: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return {name: found[name] for name in self.config.features}
