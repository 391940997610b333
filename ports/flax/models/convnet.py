"""The MNIST ConvNet, Flax NNX port of ``zoo.models.convnet``: same module tree and attribute
names (``conv1.kernel``, ``fc1.kernel``), channels-last.

fc1 flattens the pooled map in the reference's (C, H, W) order (a transpose before the
reshape), so its kernel is the reference's ``fc1.weight`` transposed, as every Linear kernel is
(``weight_convert.rules``): converted weights need no family-specific permutation."""

from __future__ import annotations

import jax
from flax import nnx

from ports.flax.layers.linear import Linear
from zoo.families.convnet import ConvNetConfig
from zoo.features import FeatureTaps
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["ConvNet", "flatten_channels_first"]


def flatten_channels_first(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, C * H * W) in the order ``torch.flatten`` gives the reference's
    (B, C, H, W) map: the boundary where the port's channels-last layout meets fc1's rows."""
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)


@register_model("convnet", "flax")
class ConvNet(nnx.Module):
    """conv1 -> ReLU -> conv2 -> ReLU -> max-pool 2 -> dropout1 -> flatten (C, H, W) -> fc1 ->
    ReLU -> dropout2 -> fc2 -> log-softmax.

    Input: (B, H, W, in_chans) channels-last, H and W pooling to ``config.feature_size``.
    Output: log-probabilities (B, num_classes); with ``config.features`` the named layers'
    outputs (``zoo.features``), channels-last maps. Dropout draws from ``rngs``' dropout stream in
    train mode (``model.train()``).
    """

    def __init__(self, config: ConvNetConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        c1, c2 = config.channels
        self.conv1 = nnx.Conv(config.in_chans, c1, (3, 3), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, (3, 3), padding="VALID", rngs=rngs)
        self.dropout1 = nnx.Dropout(config.dropout1_rate, rngs=rngs)
        self.dropout2 = nnx.Dropout(config.dropout2_rate, rngs=rngs)
        self.fc1 = Linear(config.flat_features, config.hidden, rngs=rngs)
        self.fc2 = Linear(config.hidden, config.num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_inputs(self, "flax", x)
        taps = FeatureTaps(self.config.features)
        x = self.conv1(x)
        if taps.take("conv1", x):
            return taps.outputs
        x = self.conv2(nnx.relu(x))
        if taps.take("conv2", x):
            return taps.outputs
        x = self.dropout1(nnx.max_pool(nnx.relu(x), (2, 2), strides=(2, 2), padding="VALID"))
        if taps.take("dropout1", x):
            return taps.outputs
        x = self.fc1(flatten_channels_first(x))
        if taps.take("fc1", x):
            return taps.outputs
        x = self.fc2(self.dropout2(nnx.relu(x)))
        if taps.take("fc2", x):
            return taps.outputs
        return nnx.log_softmax(x, axis=-1)
