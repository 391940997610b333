"""VGG (Simonyan & Zisserman), as torchvision's ``VGG``: config, variants, state-dict table,
inputs, feature names. Framework-free.

``features.N``: per stage, ``depths[s]`` times Conv2d 3x3 pad 1 (+ BatchNorm2d for the ``_bn``
variants) + ReLU, then MaxPool2d 2x2 stride 2 (floor: an odd side drops its last row /
column). ``avgpool``: AdaptiveAvgPool2d to ``pool_size`` x ``pool_size`` (7: the identity on a
224 input), so any input size reaches the classifier. ``classifier.0`` Linear (C * 7 * 7 ->
hidden, rows in torchvision's (C, H, W) flatten order), ``.1`` ReLU, ``.2`` Dropout, ``.3``
Linear, ``.4`` ReLU, ``.5`` Dropout, ``.6`` Linear -> logits.

Feature names (``VGGConfig.features``, ``Family.features``): every module path ``features.N``,
``avgpool``, ``classifier.N``, and Gatys' aliases (``conv{s}_{k}``, ``bn{s}_{k}`` for the
``_bn`` variants, ``relu{s}_{k}`` and ``pool{s}`` of stage ``s`` (1-based) and conv ``k``
(1-based) in the stage: ``conv1_1`` is ``features.0``, ``relu5_4`` of ``vgg19`` is
``features.34``, ``pool5`` ``features.36``). ``feature_names`` lists them in forward order,
``feature_paths`` maps each alias to its module path.

``preprocessing`` is not architecture: it says which input the weights expect, set by the
layout they came from (``zoo.preprocessing``): "imagenet" for torchvision's (RGB in [0, 1]
normalized by ImageNet mean / std), "caffe" for keras.applications' (RGB 0..255 -> BGR minus
the Caffe mean). It travels in the ports' saved configs and the converted files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from zoo import shape_table as T
from zoo.config_checks import ConfigError, in_range, positive
from zoo.family import HEAD, NOT_ARCH, Family, Input, image_input, register_family, register_variant
from zoo.preprocessing import check_preprocessing

__all__ = ["VGGConfig", "feature_names", "feature_paths", "names_at"]


@dataclass(frozen=True)
class VGGConfig:
    """Five (or ``len(depths)``) stages of 3x3 convolutions, an adaptive average pool and three
    linear layers.

    Input (reference): (B, in_chans, H, W), any H, W that survive the pools (>= 2 ** stages).
    Output: logits (B, num_classes); with ``features_only`` the last pool's map (B, C, h, w)
    (the model is ``features`` alone: keras.applications' ``include_top=False``).
    """

    in_chans: int = 3
    #: output channels of every conv of a stage
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    #: convs per stage (vgg16: 2, 2, 3, 3, 3; vgg19: 2, 2, 4, 4, 4)
    depths: tuple[int, ...] = (2, 2, 3, 3, 3)
    #: BatchNorm2d after every conv (the ``_bn`` variants)
    batch_norm: bool = False
    #: the adaptive average pool's output side (fc1 takes widths[-1] * pool_size ** 2)
    pool_size: int = 7
    #: width of classifier.0 and classifier.3
    hidden: int = 4096
    num_classes: int = field(default=1000, metadata=HEAD)
    #: ``features`` only: no avgpool, no classifier
    features_only: bool = field(default=False, metadata=HEAD)
    #: of classifier.2 and classifier.5
    dropout: float = field(default=0.5, metadata=NOT_ARCH)
    #: the input the weights expect: a key of ``zoo.preprocessing.PREPROCESSING``
    preprocessing: str = field(default="imagenet", metadata=NOT_ARCH)
    #: the resolution of the examples and ``--verify`` (any size runs)
    img_size: int = field(default=224, metadata=NOT_ARCH)
    #: named outputs to return instead (``feature_names``; ``zoo.features``); empty: the model's
    features: tuple[str, ...] = field(default=(), metadata=NOT_ARCH)

    @property
    def family(self) -> str:
        return "vgg"

    @property
    def flat_features(self) -> int:
        """classifier.0's input width: the pooled map flattened channels-first (C, H, W)."""
        return self.widths[-1] * self.pool_size**2

    def layers(self) -> list[tuple[str, int, str]]:
        """``features``' items in order: (kind, index, Gatys alias), kind "conv", "bn", "relu"
        or "pool"; ``index`` is N of ``features.N``."""
        out: list[tuple[str, int, str]] = []
        for s, depth in enumerate(self.depths, start=1):
            for k in range(1, depth + 1):
                out.append(("conv", len(out), f"conv{s}_{k}"))
                if self.batch_norm:
                    out.append(("bn", len(out), f"bn{s}_{k}"))
                out.append(("relu", len(out), f"relu{s}_{k}"))
            out.append(("pool", len(out), f"pool{s}"))
        return out


def feature_paths(config: VGGConfig) -> dict[str, str]:
    """Every feature name -> the module path it returns, in forward order: each
    ``features.N`` preceded by its Gatys alias, then ``avgpool`` and ``classifier.0`` ...
    ``classifier.6`` (unless ``features_only``)."""
    out: dict[str, str] = {}
    for _, index, alias in config.layers():
        out[alias] = out[f"features.{index}"] = f"features.{index}"
    if not config.features_only:
        out["avgpool"] = "avgpool"
        for i in range(7):
            out[f"classifier.{i}"] = f"classifier.{i}"
    return out


def feature_names(config: VGGConfig) -> tuple[str, ...]:
    """Every name the model can return (``config.features``), in forward order."""
    return tuple(feature_paths(config))


def names_at(config: VGGConfig) -> dict[str, tuple[str, ...]]:
    """Module path -> the names of ``config.features`` it returns (an alias and its path may
    both be asked for): what the forward passes hand to ``zoo.features.FeatureTaps``."""
    paths = feature_paths(config)
    out: dict[str, tuple[str, ...]] = {}
    for name in config.features:
        out[paths[name]] = (*out.get(paths[name], ()), name)
    return out


def _shapes(config: VGGConfig) -> T.Shapes:
    out: T.Shapes = {}
    channels = config.in_chans
    widths = [w for w, d in zip(config.widths, config.depths, strict=True) for _ in range(d)]
    convs = iter(widths)
    for kind, index, _ in config.layers():
        if kind == "conv":
            width = next(convs)
            T.conv(out, f"features.{index}", channels, width, 3)
            channels = width
        elif kind == "bn":
            T.norm(out, f"features.{index}", channels)
            out[f"features.{index}.running_mean"] = (channels,)
            out[f"features.{index}.running_var"] = (channels,)
            out[f"features.{index}.num_batches_tracked"] = ()
    if not config.features_only:
        T.linear(out, "classifier.0", config.flat_features, config.hidden)
        T.linear(out, "classifier.3", config.hidden, config.hidden)
        T.linear(out, "classifier.6", config.hidden, config.num_classes)
    return out


def _validate(config: VGGConfig) -> None:
    positive(config, "in_chans", "widths", "depths", "pool_size", "hidden", "num_classes")
    if not config.depths or len(config.widths) != len(config.depths):
        raise ConfigError(
            f"config fields widths / depths: {config.widths} and {config.depths} are not one "
            "width and one depth per stage"
        )
    if len(config.depths) > 16 or sum(config.depths) > 256:
        raise ConfigError(f"config field depths: {config.depths} is beyond any VGG")
    check_preprocessing(config)
    in_range(config, "dropout", 0, 1, open_high=True)
    positive(config, "img_size")


def _inputs(config: VGGConfig, shape: Sequence[int] | None) -> tuple[Input, ...]:
    return (image_input(config, shape, rank=2),)


register_family(
    Family(
        name="vgg",
        config=VGGConfig,
        model="VGG",
        shapes=_shapes,
        inputs=_inputs,
        validate=_validate,
        features=feature_names,
        description=(
            "VGG 16 / 19, with BatchNorm too (torchvision's VGG; keras.applications' VGG16 / VGG19)"
        ),
        # five stages of one conv (conv1_1 ... pool5), 32 x 32 pools to 1 x 1 before the
        # adaptive pool repeats it to 7 x 7; the parity cases add 225 x 191 (7 x 5) and
        # 300 x 250 (9 x 7: overlapping bins)
        tiny=VGGConfig(
            widths=(4, 6, 8, 8, 8), depths=(1, 1, 1, 1, 1), hidden=16, num_classes=10, img_size=32
        ),
    )
)

_VGG16, _VGG19 = (2, 2, 3, 3, 3), (2, 2, 4, 4, 4)
register_variant("vgg16", VGGConfig(depths=_VGG16), "VGG16 (torchvision vgg16, configuration D)")
register_variant("vgg19", VGGConfig(depths=_VGG19), "VGG19 (torchvision vgg19, configuration E)")
register_variant(
    "vgg16_bn",
    VGGConfig(depths=_VGG16, batch_norm=True),
    "VGG16 with BatchNorm after every conv (torchvision vgg16_bn)",
)
register_variant(
    "vgg19_bn",
    VGGConfig(depths=_VGG19, batch_norm=True),
    "VGG19 with BatchNorm after every conv (torchvision vgg19_bn)",
)
