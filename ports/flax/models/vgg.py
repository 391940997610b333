"""VGG, Flax NNX port of ``zoo.models.vgg``: same module tree and attribute names
(``features.0.kernel``, ``classifier.6.kernel``), channels-last. The ``_bn`` variants'
BatchNorms are PyTorch's (``BatchNorm2d``: eps 1e-5, momentum 0.1, ``nnx.BatchStat`` running
statistics used after ``model.eval()``, updated after ``model.train()``). Every item of the
reference's ``features`` / ``classifier`` is a module here too (``ports.flax.layers.pool``'s
ReLU and MaxPool2d, ``nnx.Dropout``), so features and parity records have the reference's
paths.

classifier.0 flattens the pooled map in the reference's (C, H, W) order
(``flatten_channels_first``), so its kernel is torchvision's weight transposed, as every Linear
kernel is; keras.applications' (H, W, C) order is the layout's business
(``weight_convert.layouts.vgg``)."""

from __future__ import annotations

import jax
from flax import nnx

from ports.flax.layers.linear import Linear
from ports.flax.layers.norm import BatchNorm2d
from ports.flax.layers.pool import AdaptiveAvgPool2d, MaxPool2d, ReLU
from ports.flax.models.convnet import flatten_channels_first
from zoo.families.vgg import VGGConfig, names_at
from zoo.features import FeatureTaps
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["VGG"]


def _feature_layers(config: VGGConfig, rngs: nnx.Rngs) -> list[nnx.Module]:
    widths = iter(w for w, d in zip(config.widths, config.depths, strict=True) for _ in range(d))
    out: list[nnx.Module] = []
    channels = config.in_chans
    for kind, _, _ in config.layers():
        if kind == "conv":
            width = next(widths)
            out.append(nnx.Conv(channels, width, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs))
            channels = width
        elif kind == "bn":
            out.append(BatchNorm2d(channels, rngs=rngs))
        elif kind == "relu":
            out.append(ReLU())
        else:
            out.append(MaxPool2d(2, 2))
    return out


@register_model("vgg", "flax")
class VGG(nnx.Module):
    """features -> avgpool -> flatten (C, H, W) -> classifier.

    Input: (B, H, W, in_chans) channels-last. Output: logits (B, num_classes); with
    ``config.features_only`` the last pool's map (B, h, w, C); with ``config.features`` a dict
    of those outputs (maps channels-last), in the order asked. Dropout draws from ``rngs``'
    dropout stream, and BatchNorm normalizes with the batch's statistics (updating the running
    ones), in train mode (``model.train()``).
    """

    def __init__(self, config: VGGConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        self.features = nnx.List(_feature_layers(config, rngs))
        if not config.features_only:
            self.avgpool = AdaptiveAvgPool2d((config.pool_size,) * 2)
            hidden, rate = config.hidden, config.dropout
            self.classifier = nnx.List(
                [
                    Linear(config.flat_features, hidden, rngs=rngs),
                    ReLU(),
                    nnx.Dropout(rate, rngs=rngs),
                    Linear(hidden, hidden, rngs=rngs),
                    ReLU(),
                    nnx.Dropout(rate, rngs=rngs),
                    Linear(hidden, config.num_classes, rngs=rngs),
                ]
            )

    def _stages(self):
        for i, m in enumerate(self.features):
            yield f"features.{i}", m
        if not self.config.features_only:
            yield "avgpool", self.avgpool
            yield "flatten", flatten_channels_first
            for i, m in enumerate(self.classifier):
                yield f"classifier.{i}", m

    def __call__(self, x: jax.Array) -> jax.Array | dict[str, jax.Array]:
        check_inputs(self, "flax", x)
        taps, at = FeatureTaps(self.config.features), names_at(self.config)
        for path, m in self._stages():
            x = m(x)
            if any([taps.take(name, x) for name in at.get(path, ())]):
                return taps.outputs
        return x
