"""The MNIST ConvNet of the introductory PyTorch examples: config, variants, state-dict table,
inputs. Framework-free.

conv1 (3x3) -> ReLU -> conv2 (3x3) -> ReLU -> 2x2 max-pool -> dropout1 -> flatten -> fc1 -> ReLU
-> dropout2 -> fc2 -> log-softmax, attribute names as pytorch/examples ``mnist/main.py``'s
``Net`` (``conv1``, ``conv2``, ``dropout1``, ``dropout2``, ``fc1``, ``fc2``). The model is
``ConvNet`` in ``zoo.models.convnet`` and both ports; its checkpoint layout (that ``Net``'s
``state_dict()``, which ``--save-model`` writes as ``mnist_cnn.pt``) is in
``weight_convert.layouts.convnet``. Bundled training data: ``zoo.datasets.digits``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo import shape_table as T
from zoo.config_checks import ConfigError, in_range, positive
from zoo.family import HEAD, NOT_ARCH, Family, Input, image_input, register_family, register_variant

__all__ = ["FEATURES", "MNIST_MEAN", "MNIST_STD", "ConvNetConfig"]

#: the input normalization the MNIST examples train with (``transforms.Normalize``)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

#: the two unpadded 3x3 convolutions take 4 pixels off each side length before the pool
_CONV_SHRINK = 4


@dataclass(frozen=True)
class ConvNetConfig:
    """Two 3x3 convolutions (no padding, stride 1), a 2x2 max-pool and two linear layers.

    Input (reference): (B, in_chans, H, W) with ``(H - 4) // 2`` and ``(W - 4) // 2`` equal to
    ``feature_size`` (``img_size`` or ``img_size + 1``: fc1 takes a fixed number of features).
    Output: log-probabilities (B, num_classes).
    """

    in_chans: int = 1
    #: output channels of conv1 and conv2
    channels: tuple[int, int] = (16, 32)
    #: fc1's width
    hidden: int = 64
    num_classes: int = field(default=10, metadata=HEAD)  # the head: a variant override
    #: after the pool, and after fc1's ReLU
    dropout1_rate: float = field(default=0.1, metadata=NOT_ARCH)
    dropout2_rate: float = field(default=0.25, metadata=NOT_ARCH)
    #: decides fc1's input width (channels[1] * feature_size ** 2)
    img_size: int = 28
    #: named outputs to return instead of the log-probabilities (``FEATURES``)
    features: tuple[str, ...] = field(default=(), metadata=NOT_ARCH)

    @property
    def family(self) -> str:
        return "convnet"

    @property
    def feature_size(self) -> int:
        """Side of the pooled map fc1 flattens."""
        return (self.img_size - _CONV_SHRINK) // 2

    @property
    def flat_features(self) -> int:
        """fc1's input width: the pooled map flattened channels-first (C, H, W)."""
        return self.channels[1] * self.feature_size**2


#: the outputs a ``features`` model can return: each layer's (``dropout1``: the pooled map)
FEATURES = ("conv1", "conv2", "dropout1", "fc1", "fc2")


def _shapes(config: ConvNetConfig) -> T.Shapes:
    out: T.Shapes = {}
    c1, c2 = config.channels
    T.conv(out, "conv1", config.in_chans, c1, 3)
    T.conv(out, "conv2", c1, c2, 3)
    T.linear(out, "fc1", config.flat_features, config.hidden)
    T.linear(out, "fc2", config.hidden, config.num_classes)
    return out


def _validate(config: ConvNetConfig) -> None:
    positive(config, "in_chans", "channels", "hidden", "num_classes")
    if len(config.channels) != 2:
        raise ConfigError(f"config field channels: {config.channels} is not two widths")
    if config.img_size < _CONV_SHRINK + 2:
        raise ConfigError(f"config field img_size: {config.img_size} leaves no pixel to pool")
    in_range(config, "dropout1_rate", 0, 1, open_high=True)
    in_range(config, "dropout2_rate", 0, 1, open_high=True)


def _inputs(config: ConvNetConfig, shape: Sequence[int] | None) -> tuple[Input, ...]:
    return (image_input(config, shape, rank=2),)


def _check_inputs(model: Any, framework: str, x: Any, **reference: Any) -> None:
    """The image checks (rank, channels, dtype), then the size: fc1 takes a fixed number of
    features, so H and W must pool to ``feature_size``."""
    from zoo.validate import check_image

    config = model.config
    check_image(
        model,
        x.shape,
        x.dtype,
        framework=framework,
        channels=config.in_chans,
        spatial_rank=2,
        **reference,
    )
    hw = tuple(x.shape[2:] if framework == "torch" else x.shape[1:3])
    pooled = tuple(None if s is None else (s - _CONV_SHRINK) // 2 for s in hw)
    side = config.feature_size
    if any(p is not None and p != side for p in pooled):
        size = config.img_size
        raise ValueError(
            f"{type(model).__name__}: a {hw[0]}x{hw[1]} image pools to {pooled[0]}x{pooled[1]} "
            f"but fc1 takes {config.channels[1]} x {side} x {side} features; feed {size} x {size} "
            f"(or {size + 1} x {size + 1}) images"
        )


register_family(
    Family(
        name="convnet",
        config=ConvNetConfig,
        model="ConvNet",
        shapes=_shapes,
        inputs=_inputs,
        check_inputs=_check_inputs,
        validate=_validate,
        features=lambda config: FEATURES,
        description="the MNIST ConvNet of the PyTorch examples (two convs, max-pool, two linears)",
        # 12 -> 10 -> 8 -> pooled 4 x 4: the parity cases add an odd 13 x 13 (the pool floors)
        tiny=ConvNetConfig(channels=(4, 8), hidden=16, img_size=12),
    )
)

register_variant(
    "mnist_convnet",
    ConvNetConfig(),
    "MNIST ConvNet, convs 16 / 32, fc 4608 -> 64 -> 10, dropout 0.1 / 0.25 (issue 13's recipe)",
)
register_variant(
    "mnist_convnet_examples",
    ConvNetConfig(channels=(32, 64), hidden=128, dropout1_rate=0.25, dropout2_rate=0.5),
    "pytorch/examples mnist Net: convs 32 / 64, fc 9216 -> 128 -> 10, dropout 0.25 / 0.5",
)
