"""ResNet, Keras 3 port of ``zoo.models.resnet``: same module tree and names
(``root/layer1-0/conv1/kernel``, ``root/layer1-0/downsample-1/moving_mean``), channels-last,
``keras.ops`` only. Convolutions pad as PyTorch does (symmetric, explicit: Keras's
``padding="same"`` pads a strided conv on an even side (0, 1)), the max-pool with -inf
(``ports.keras.layers.MaxPool2d``), every BatchNorm is PyTorch's (``BatchNorm2d``: eps 1e-5,
momentum 0.1, running statistics updated in ``model(x, training=True)`` and ``fit``)."""

from __future__ import annotations

import keras
from keras import ops

from ports.keras.layers import BatchNorm2d, MaxPool2d
from ports.keras.layers.dense import Dense
from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
from zoo.families.resnet import ResNetConfig, block_has_downsample
from zoo.family import check_features
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["BasicBlock", "Bottleneck", "PaddedConv2D", "ResNet"]


@keras.saving.register_keras_serializable(package="vit_zoo")
class PaddedConv2D(keras.layers.Conv2D):
    """``nn.PaddedConv2D(i, o, k, stride, padding=k // 2, bias=False)`` channels-last: the padding
    is explicit and symmetric, as PyTorch's."""

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, **kwargs) -> None:
        kwargs.setdefault("use_bias", False)
        kwargs.pop("padding", None)
        super().__init__(filters, kernel_size, strides=strides, padding="valid", **kwargs)

    def call(self, x: Tensor) -> Tensor:
        p = self.kernel_size[0] // 2
        if p:
            x = ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        return super().call(x)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        b, h, w, _ = input_shape
        k, s = self.kernel_size[0], self.strides[0]
        side = [None if d is None else (d + 2 * (k // 2) - k) // s + 1 for d in (h, w)]
        return (b, *side, self.filters)


class _Block(keras.layers.Layer):
    """What both block kinds share: the shortcut (``downsample-0`` conv, ``downsample-1``
    BatchNorm, named so the paths read ``downsample.0`` / ``downsample.1``) and the build."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        self.relu = keras.layers.ReLU(name="relu")

    def make_downsample(self) -> None:
        """The shortcut, made last (Keras lists variables in creation order: the reference's
        ``state_dict()`` has ``downsample`` after the convs)."""
        out, stride = self.planes * self.expansion, self.stride
        self.downsample = None
        if block_has_downsample(self.inplanes, self.planes, stride, self.expansion):
            self.downsample = [
                PaddedConv2D(out, 1, stride, name="downsample-0"),
                BatchNorm2d(out, name="downsample-1"),
            ]

    def shortcut(self, x: Tensor, training: bool | None) -> Tensor:
        if self.downsample is None:
            return x
        conv, bn = self.downsample
        return bn(conv(x), training=training)

    def build_convs(self, convs: list[tuple[keras.layers.Layer, int, keras.layers.Layer]]) -> None:
        """Build each (conv, input channels, bn) and the shortcut."""
        for conv, cin, bn in convs:
            conv.build((None, None, None, cin))
            bn.build((None, None, None, conv.filters))
        if self.downsample is not None:
            self.downsample[0].build((None, None, None, self.inplanes))
            self.downsample[1].build((None, None, None, self.planes * self.expansion))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        b, h, w, _ = input_shape
        side = [None if d is None else (d - 1) // self.stride + 1 for d in (h, w)]
        return (b, *side, self.planes * self.expansion)


@keras.saving.register_keras_serializable(package="vit_zoo")
class BasicBlock(_Block):
    """conv1 (3x3, stride) -> bn1 -> relu -> conv2 (3x3) -> bn2, plus the shortcut, then relu.
    (B, H, W, inplanes) -> (B, H / stride, W / stride, planes)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, **kwargs) -> None:
        super().__init__(inplanes, planes, stride, **kwargs)
        self.conv1 = PaddedConv2D(planes, 3, stride, name="conv1")
        self.bn1 = BatchNorm2d(planes, name="bn1")
        self.conv2 = PaddedConv2D(planes, 3, name="conv2")
        self.bn2 = BatchNorm2d(planes, name="bn2")
        self.make_downsample()

    def build(self, input_shape: tuple) -> None:
        self.build_convs(
            [(self.conv1, self.inplanes, self.bn1), (self.conv2, self.planes, self.bn2)]
        )

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        identity = self.shortcut(x, training)
        out = self.relu(self.bn1(self.conv1(x), training=training))
        out = self.bn2(self.conv2(out), training=training)
        return self.relu(out + identity)


@keras.saving.register_keras_serializable(package="vit_zoo")
class Bottleneck(_Block):
    """conv1 (1x1) -> bn1 -> relu -> conv2 (3x3, stride) -> bn2 -> relu -> conv3 (1x1,
    4 * planes) -> bn3, plus the shortcut, then relu. (B, H, W, inplanes) ->
    (B, H / stride, W / stride, 4 * planes)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, **kwargs) -> None:
        super().__init__(inplanes, planes, stride, **kwargs)
        self.conv1 = PaddedConv2D(planes, 1, name="conv1")
        self.bn1 = BatchNorm2d(planes, name="bn1")
        self.conv2 = PaddedConv2D(planes, 3, stride, name="conv2")
        self.bn2 = BatchNorm2d(planes, name="bn2")
        self.conv3 = PaddedConv2D(planes * 4, 1, name="conv3")
        self.bn3 = BatchNorm2d(planes * 4, name="bn3")
        self.make_downsample()

    def build(self, input_shape: tuple) -> None:
        p = self.planes
        self.build_convs(
            [
                (self.conv1, self.inplanes, self.bn1),
                (self.conv2, p, self.bn2),
                (self.conv3, p, self.bn3),
            ]
        )

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        identity = self.shortcut(x, training)
        out = self.relu(self.bn1(self.conv1(x), training=training))
        out = self.relu(self.bn2(self.conv2(out), training=training))
        out = self.bn3(self.conv3(out), training=training)
        return self.relu(out + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("resnet", "keras")
class ResNet(ZooModel):
    """torchvision's ``ResNet``. Input (B, H, W, in_chans) channels-last, any H, W; output
    logits (B, num_classes), or with ``config.features`` a dict of those module outputs
    (channels-last maps) in that order (the forward stops after the last one)."""

    def __init__(self, config: ResNetConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        check_features(config)
        self.config = config
        block = BLOCKS[config.block]
        self.conv1 = PaddedConv2D(config.planes[0], 7, 2, name="conv1")
        self.bn1 = BatchNorm2d(config.planes[0], name="bn1")
        self.relu = keras.layers.ReLU(name="relu")
        self.maxpool = MaxPool2d(3, 2, 1, name="maxpool")
        for k, (inplanes, planes, blocks, stride) in enumerate(config.stages(), start=1):
            out = planes * block.expansion
            items = [block(inplanes, planes, stride, name=f"layer{k}-0")]
            items += [block(out, planes, name=f"layer{k}-{m}") for m in range(1, blocks)]
            setattr(self, f"layer{k}", items)
        self.avgpool = keras.layers.GlobalAveragePooling2D(keepdims=True, name="avgpool")
        self.fc = Dense(config.num_classes, name="fc")

    def build(self, input_shape: tuple) -> None:
        self.conv1.build((None, None, None, self.config.in_chans))
        self.bn1.build((None, None, None, self.config.planes[0]))
        for items in self._stages():
            for block in items:
                block.build((None, None, None, block.inplanes))
        self.fc.build((None, self.config.num_features))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor | dict[str, Tensor]:
        check_inputs(self, "keras", x)
        wanted = set(self.config.features)
        found: dict[str, Tensor] = {}

        def keep(name: str, value: Tensor) -> bool:
            if name in wanted:
                found[name] = value
            return bool(wanted) and len(found) == len(wanted)

        x = self.conv1(x)
        if keep("conv1", x):
            return self._ordered(found)
        x = self.bn1(x, training=training)
        if keep("bn1", x):
            return self._ordered(found)
        for name, layer in (("relu", self.relu), ("maxpool", self.maxpool)):
            x = layer(x)
            if keep(name, x):
                return self._ordered(found)
        for k, items in enumerate(self._stages(), start=1):
            for m, block in enumerate(items):
                x = block(x, training=training)
                if keep(f"layer{k}.{m}", x):
                    return self._ordered(found)
            if keep(f"layer{k}", x):
                return self._ordered(found)
        x = self.avgpool(x)
        if keep("avgpool", x):
            return self._ordered(found)
        x = self.fc(ops.reshape(x, (-1, self.config.num_features)))
        if keep("fc", x):
            return self._ordered(found)
        return x

    def _stages(self) -> list[list[_Block]]:
        return [getattr(self, f"layer{k}") for k in range(1, 5)]

    def _ordered(self, found: dict[str, Tensor]) -> dict[str, Tensor]:
        return {name: found[name] for name in self.config.features}

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.config.num_classes)
