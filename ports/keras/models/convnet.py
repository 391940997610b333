"""The MNIST ConvNet, Keras 3 port of ``zoo.models.convnet``: same module tree and names
(``root/conv1/kernel``, ``root/fc1/kernel``), channels-last, ``keras.ops`` only.

fc1 flattens the pooled map in the reference's (C, H, W) order (a transpose before the
reshape), so its kernel is the reference's ``fc1.weight`` transposed, as every Dense kernel is
(``weight_convert.rules``): converted weights need no family-specific permutation."""

from __future__ import annotations

import keras
from keras import ops

from ports.keras.layers.dense import Dense
from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
from zoo.families.convnet import ConvNetConfig
from zoo.features import FeatureTaps
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["ConvNet", "flatten_channels_first"]


def flatten_channels_first(x: Tensor) -> Tensor:
    """(B, H, W, C) -> (B, C * H * W) in the order ``torch.flatten`` gives the reference's
    (B, C, H, W) map: the boundary where the port's channels-last layout meets fc1's rows."""
    _, h, w, c = x.shape
    return ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, c * h * w))


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("convnet", "keras")
class ConvNet(ZooModel):
    """conv1 -> ReLU -> conv2 -> ReLU -> max-pool 2 -> dropout1 -> flatten (C, H, W) -> fc1 ->
    ReLU -> dropout2 -> fc2 -> log-softmax.

    Input: (B, H, W, in_chans) channels-last, H and W pooling to ``config.feature_size``.
    Output: log-probabilities (B, num_classes); with ``config.features`` the named layers'
    outputs (``zoo.features``), channels-last maps.
    """

    def __init__(self, config: ConvNetConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        c1, c2 = config.channels
        self.conv1 = keras.layers.Conv2D(c1, 3, data_format="channels_last", name="conv1")
        self.conv2 = keras.layers.Conv2D(c2, 3, data_format="channels_last", name="conv2")
        self.dropout1 = keras.layers.Dropout(config.dropout1_rate, name="dropout1")
        self.dropout2 = keras.layers.Dropout(config.dropout2_rate, name="dropout2")
        self.fc1 = Dense(config.hidden, name="fc1")
        self.fc2 = Dense(config.num_classes, name="fc2")

    def build(self, input_shape: tuple) -> None:
        b, c1, c2 = input_shape[0], *self.config.channels
        self.conv1.build((b, None, None, self.config.in_chans))
        self.conv2.build((b, None, None, c1))
        self.dropout1.build((b, None, None, c2))
        self.fc1.build((b, self.config.flat_features))
        self.dropout2.build((b, self.config.hidden))
        self.fc2.build((b, self.config.hidden))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        check_inputs(self, "keras", x)
        taps = FeatureTaps(self.config.features)
        x = self.conv1(x)
        if taps.take("conv1", x):
            return taps.outputs
        x = self.conv2(ops.relu(x))
        if taps.take("conv2", x):
            return taps.outputs
        x = ops.max_pool(
            ops.relu(x), pool_size=2, strides=2, padding="valid", data_format="channels_last"
        )
        x = self.dropout1(x, training=training)
        if taps.take("dropout1", x):
            return taps.outputs
        x = self.fc1(flatten_channels_first(x))
        if taps.take("fc1", x):
            return taps.outputs
        x = self.fc2(self.dropout2(ops.relu(x), training=training))
        if taps.take("fc2", x):
            return taps.outputs
        return ops.log_softmax(x, axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple | dict:
        if not self.config.features:
            return (input_shape[0], self.config.num_classes)
        b, h, w = input_shape[:3]
        c1, c2 = self.config.channels
        less = [None if s is None else s - 2 for s in (h, w)]
        pooled = [None if s is None else (s - 2) // 2 for s in less]
        shapes = {
            "conv1": (b, *less, c1),
            "conv2": (b, *[None if s is None else s - 2 for s in less], c2),
            "dropout1": (b, *pooled, c2),
            "fc1": (b, self.config.hidden),
            "fc2": (b, self.config.num_classes),
        }
        return {name: shapes[name] for name in self.config.features}
