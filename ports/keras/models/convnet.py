"""The MNIST ConvNet, Keras 3 port of ``zoo.models.convnet``: same module tree and names
(``root/conv1/kernel``, ``root/fc1/kernel``), channels-last, ``keras.ops`` only.

fc1 flattens the pooled map in the reference's (C, H, W) order (a transpose before the
reshape), so its kernel is the reference's ``fc1.weight`` transposed, as every Dense kernel is
(``weight_convert.rules``): converted weights need no family-specific permutation."""

from __future__ import annotations

import keras
from keras import ops

from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
from zoo.families.convnet import ConvNetConfig
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
    Output: log-probabilities (B, num_classes).
    """

    def __init__(self, config: ConvNetConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        c1, c2 = config.channels
        self.conv1 = keras.layers.Conv2D(c1, 3, data_format="channels_last", name="conv1")
        self.conv2 = keras.layers.Conv2D(c2, 3, data_format="channels_last", name="conv2")
        self.dropout1 = keras.layers.Dropout(config.dropout1_rate, name="dropout1")
        self.dropout2 = keras.layers.Dropout(config.dropout2_rate, name="dropout2")
        self.fc1 = keras.layers.Dense(config.hidden, name="fc1")
        self.fc2 = keras.layers.Dense(config.num_classes, name="fc2")

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
        x = ops.relu(self.conv1(x))
        x = ops.relu(self.conv2(x))
        x = ops.max_pool(x, pool_size=2, strides=2, padding="valid", data_format="channels_last")
        x = self.dropout1(x, training=training)
        x = ops.relu(self.fc1(flatten_channels_first(x)))
        x = self.fc2(self.dropout2(x, training=training))
        return ops.log_softmax(x, axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.config.num_classes)
