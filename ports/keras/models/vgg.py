"""VGG, Keras 3 port of ``zoo.models.vgg``: same module tree and names (``root/features-0/kernel``,
``root/classifier-6/kernel``; list items are named ``features-N``, Keras on torch refusing dots),
channels-last, ``keras.ops`` only. The ``_bn`` variants' BatchNorms are PyTorch's
(``BatchNorm2d``: eps 1e-5, momentum 0.1, running statistics updated in ``model(x,
training=True)`` and ``fit``). Every item of the reference's ``features`` / ``classifier``
is a layer here too (ReLU, MaxPooling2D, Dropout), so features and parity records have the
reference's paths.

classifier.0 flattens the pooled map in the reference's (C, H, W) order
(``flatten_channels_first``), so its kernel is torchvision's weight transposed, as every Dense
kernel is; keras.applications' (H, W, C) order is the layout's business
(``weight_convert.layouts.vgg``)."""

from __future__ import annotations

import keras

from ports.keras.layers.dense import Dense
from ports.keras.layers.norm import BatchNorm2d
from ports.keras.layers.pool import AdaptiveAvgPool2d
from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
from ports.keras.models.convnet import flatten_channels_first
from zoo.families.vgg import VGGConfig, names_at
from zoo.features import FeatureTaps
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["VGG"]


def _feature_layers(config: VGGConfig) -> list[keras.layers.Layer]:
    widths = iter(w for w, d in zip(config.widths, config.depths, strict=True) for _ in range(d))
    out: list[keras.layers.Layer] = []
    width = config.in_chans
    for kind, index, _ in config.layers():
        name = f"features-{index}"
        if kind == "conv":
            width = next(widths)
            out.append(keras.layers.Conv2D(width, 3, padding="same", name=name))
        elif kind == "bn":
            out.append(BatchNorm2d(width, name=name))
        elif kind == "relu":
            out.append(keras.layers.ReLU(name=name))
        else:
            out.append(keras.layers.MaxPooling2D(2, 2, padding="valid", name=name))
    return out


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("vgg", "keras")
class VGG(ZooModel):
    """features -> avgpool -> flatten (C, H, W) -> classifier.

    Input: (B, H, W, in_chans) channels-last. Output: logits (B, num_classes); with
    ``config.features_only`` the last pool's map (B, h, w, C); with ``config.features`` a dict
    of those outputs (maps channels-last), in the order asked.
    """

    def __init__(self, config: VGGConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.features = _feature_layers(config)
        if not config.features_only:
            self.avgpool = AdaptiveAvgPool2d((config.pool_size,) * 2, name="avgpool")
            hidden, rate = config.hidden, config.dropout
            self.classifier = [
                Dense(hidden, name="classifier-0"),
                keras.layers.ReLU(name="classifier-1"),
                keras.layers.Dropout(rate, name="classifier-2"),
                Dense(hidden, name="classifier-3"),
                keras.layers.ReLU(name="classifier-4"),
                keras.layers.Dropout(rate, name="classifier-5"),
                Dense(config.num_classes, name="classifier-6"),
            ]

    def build(self, input_shape: tuple) -> None:
        shape = (input_shape[0], None, None, self.config.in_chans)
        for layer in self.features:
            layer.build(shape)
            if isinstance(layer, keras.layers.Conv2D):
                shape = (*shape[:3], layer.filters)
        if not self.config.features_only:
            shape = (input_shape[0], self.config.flat_features)
            for layer in self.classifier:
                layer.build(shape)
                if isinstance(layer, keras.layers.Dense):
                    shape = (shape[0], layer.units)

    def _stages(self):
        for i, layer in enumerate(self.features):
            yield f"features.{i}", layer
        if not self.config.features_only:
            yield "avgpool", self.avgpool
            yield "flatten", None
            for i, layer in enumerate(self.classifier):
                yield f"classifier.{i}", layer

    def call(self, x: Tensor, training: bool | None = None) -> Tensor | dict[str, Tensor]:
        check_inputs(self, "keras", x)
        taps, at = FeatureTaps(self.config.features), names_at(self.config)
        for path, layer in self._stages():
            if layer is None:
                x = flatten_channels_first(x)
            elif isinstance(layer, (keras.layers.Dropout, BatchNorm2d)):
                x = layer(x, training=training)
            else:
                x = layer(x)
            if any([taps.take(name, x) for name in at.get(path, ())]):
                return taps.outputs
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        if self.config.features or self.config.features_only:
            return super().compute_output_shape(input_shape)
        return (input_shape[0], self.config.num_classes)
