"""Inception-v3 (Szegedy et al. 2015) as torchvision's ``Inception3`` and as pytorch-fid's FID
Inception: config, variants, the layer table every framework builds from, state-dict table,
inputs, feature names. Framework-free.

Module tree and names as torchvision's ``Inception3``: ``Conv2d_1a_3x3`` .. ``Conv2d_4a_3x3``
(``BasicConv2d``: ``conv`` without bias, ``bn`` with eps 0.001, then ReLU), ``maxpool1`` /
``maxpool2`` (3x3, stride 2), ``Mixed_5b`` .. ``Mixed_7c`` (InceptionA x 3, B, C x 4, D, E x 2,
their branches named as there: ``branch1x1``, ``branch5x5_1``, ...), ``avgpool`` (global),
``dropout``, ``fc``. ``LAYERS`` / ``block_convs`` below are that tree as data: the shape table,
the reference and both ports build their convolutions from it.

Two variants of the computation on the same tensors (``fid``):

- torchvision's ``inception_v3``: the pooling branches of InceptionA / C / E average a 3x3
  window padded with zeros that count (``count_include_pad=True``); 1000 classes; its release
  (``inception_v3_google-0cc3c7bd.pth``) also holds the training-only auxiliary head
  ``AuxLogits`` (``InceptionAux``), which this model does not have: reading such a file drops
  those tensors and says so (``weight_convert.layouts.inception_v3``); its weights expect
  ``transform_input=True`` (ImageNet mean / std re-normalization, as
  ``inception_v3(weights=...)`` sets it).
- pytorch-fid 0.3.0's ``fid_inception_v3`` (TensorFlow's 2015-12-05 graph, the FID standard):
  ``FIDInceptionA`` / ``C`` / ``E_1`` average without counting the padding
  (``count_include_pad=False``), ``FIDInceptionE_2`` (``Mixed_7c``) takes a 3x3 max-pool in its
  pooling branch, 1008 classes, no auxiliary head. Its input pipeline is pytorch-fid's
  ``InceptionV3``: ``resize_input=299`` (``F.interpolate(mode="bilinear",
  align_corners=False)``, no antialiasing: what pytorch-fid does, so features equal its own;
  the ports resize with ``zoo.interpolate.linear_taps``, PyTorch's float32 CPU taps, proven equal
  to ``F.interpolate`` in the tests) then ``normalize_input`` (``2 x - 1``: [0, 1] to [-1, 1]).

``features``: module paths returned instead of the logits (``feature_names``), plus ``pool3``
(the 2048-d pool features, (B, 2048): what FID uses; pytorch-fid's block 3) and ``logits``
(``fc``'s output: what the Inception Score uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo import shape_table as T
from zoo.config_checks import ConfigError, in_range, positive
from zoo.family import HEAD, NOT_ARCH, Family, Input, image_input, register_family, register_variant

__all__ = [
    "BN_EPS",
    "FID_CLASSES",
    "LAYERS",
    "MIN_SIZE",
    "ConvSpec",
    "InceptionV3Config",
    "block_convs",
    "feature_names",
    "mixed_blocks",
]

#: every BasicConv2d's BatchNorm eps (torchvision's and TensorFlow's Inception; not PyTorch's
#: 1e-5 default)
BN_EPS = 1e-3
#: the FID Inception's classifier width (TensorFlow's 2015-12-05 graph: 1000 ImageNet classes
#: plus 8 unused)
FID_CLASSES = 1008
#: the smallest input side the unpadded stem and the strided blocks leave a pixel of
#: (torchvision's ``min_size``)
MIN_SIZE = 75
#: torchvision's ``transform_input`` constants: ImageNet (mean, std) per channel
IMAGENET_MEAN_STD = ((0.485, 0.229), (0.456, 0.224), (0.406, 0.225))


@dataclass(frozen=True)
class ConvSpec:
    """One ``BasicConv2d``: ``name`` (its attribute in the block), input / output channels,
    kernel (kh, kw), stride, padding (ph, pw)."""

    name: str
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class InceptionV3Config:
    """torchvision's ``Inception3(num_classes, aux_logits=False, transform_input)``, or with
    ``fid`` pytorch-fid's FID Inception (its ``InceptionV3`` wrapper's resize and normalization
    as ``resize_input`` / ``normalize_input``).

    Input (reference): (B, in_chans, H, W), H and W >= 75 (any size with ``resize_input``).
    Output: logits (B, num_classes), or with ``features`` a dict of the named outputs in the
    order asked (maps (B, C, H, W) in the reference, (B, H, W, C) in the ports; ``pool3``
    (B, 2048 / width_divisor)), the forward stopping after the last one.
    """

    #: pytorch-fid's FIDInception blocks (see the module docstring) instead of torchvision's
    fid: bool = False
    in_chans: int = 3
    num_classes: int = field(default=1000, metadata=HEAD)
    #: every channel width divided by this (1, 2, 4, 8 or 16): the tests' tiny models keep the
    #: whole topology (every block kind, every padding) at a fraction of the cost
    width_divisor: int = 1
    #: torchvision's ImageNet re-normalization of the input (what its release's weights expect)
    transform_input: bool = field(default=False, metadata=NOT_ARCH)
    #: resize the input to this side first, bilinear as ``F.interpolate(align_corners=False)``
    #: (pytorch-fid: 299); 0: no resize
    resize_input: int = field(default=0, metadata=NOT_ARCH)
    #: map the input from [0, 1] to [-1, 1] (``2 x - 1``) after the resize, as pytorch-fid
    normalize_input: bool = field(default=False, metadata=NOT_ARCH)
    #: the dropout before ``fc`` (torchvision's 0.5; inactive in eval mode)
    dropout: float = field(default=0.5, metadata=NOT_ARCH)
    #: the example input's side
    img_size: int = field(default=299, metadata=NOT_ARCH)
    #: names of the outputs to return (``feature_names``); () returns the logits
    features: tuple[str, ...] = field(default=(), metadata=NOT_ARCH)

    @property
    def family(self) -> str:
        return "inception_v3"

    def width(self, channels: int) -> int:
        return channels // self.width_divisor

    @property
    def num_features(self) -> int:
        """The pool features' width (fc's input): 2048 / width_divisor."""
        return self.width(2048)


#: the stem: (name, in, out, kernel, stride, padding) at full width; "maxpool1" / "maxpool2"
#: are the 3x3 / 2 max-pools between
STEM = (
    ("Conv2d_1a_3x3", 3, 32, 3, 2, 0),
    ("Conv2d_2a_3x3", 32, 32, 3, 1, 0),
    ("Conv2d_2b_3x3", 32, 64, 3, 1, 1),
    ("maxpool1", 64, 64, 0, 0, 0),
    ("Conv2d_3b_1x1", 64, 80, 1, 1, 0),
    ("Conv2d_4a_3x3", 80, 192, 3, 1, 0),
    ("maxpool2", 192, 192, 0, 0, 0),
)

#: the Inception blocks: (name, kind, in channels, argument: pool_features (A) or
#: channels_7x7 (C)) at full width
MIXED = (
    ("Mixed_5b", "A", 192, 32),
    ("Mixed_5c", "A", 256, 64),
    ("Mixed_5d", "A", 288, 64),
    ("Mixed_6a", "B", 288, 0),
    ("Mixed_6b", "C", 768, 128),
    ("Mixed_6c", "C", 768, 160),
    ("Mixed_6d", "C", 768, 160),
    ("Mixed_6e", "C", 768, 192),
    ("Mixed_7a", "D", 768, 0),
    ("Mixed_7b", "E", 1280, 0),
    ("Mixed_7c", "E", 2048, 0),
)

#: every top-level module in forward order (the features ``feature_names`` lists)
LAYERS = tuple(s[0] for s in STEM) + tuple(m[0] for m in MIXED) + ("avgpool", "fc")


def _k(k: int | tuple[int, int]) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else k


def block_convs(kind: str, cin: int, arg: int, width) -> list[ConvSpec]:
    """The ``BasicConv2d``s of an Inception block of ``kind`` (A .. E) in torchvision's
    attribute (and state-dict) order; ``width(c)`` scales a full-size width."""
    w = width
    c = cin

    def conv(name, i, o, k=1, s=1, p=0):
        return ConvSpec(name, i, o, _k(k), s, _k(p))

    if kind == "A":
        return [
            conv("branch1x1", c, w(64)),
            conv("branch5x5_1", c, w(48)),
            conv("branch5x5_2", w(48), w(64), 5, p=2),
            conv("branch3x3dbl_1", c, w(64)),
            conv("branch3x3dbl_2", w(64), w(96), 3, p=1),
            conv("branch3x3dbl_3", w(96), w(96), 3, p=1),
            conv("branch_pool", c, w(arg)),
        ]
    if kind == "B":
        return [
            conv("branch3x3", c, w(384), 3, s=2),
            conv("branch3x3dbl_1", c, w(64)),
            conv("branch3x3dbl_2", w(64), w(96), 3, p=1),
            conv("branch3x3dbl_3", w(96), w(96), 3, s=2),
        ]
    if kind == "C":
        c7 = w(arg)
        return [
            conv("branch1x1", c, w(192)),
            conv("branch7x7_1", c, c7),
            conv("branch7x7_2", c7, c7, (1, 7), p=(0, 3)),
            conv("branch7x7_3", c7, w(192), (7, 1), p=(3, 0)),
            conv("branch7x7dbl_1", c, c7),
            conv("branch7x7dbl_2", c7, c7, (7, 1), p=(3, 0)),
            conv("branch7x7dbl_3", c7, c7, (1, 7), p=(0, 3)),
            conv("branch7x7dbl_4", c7, c7, (7, 1), p=(3, 0)),
            conv("branch7x7dbl_5", c7, w(192), (1, 7), p=(0, 3)),
            conv("branch_pool", c, w(192)),
        ]
    if kind == "D":
        return [
            conv("branch3x3_1", c, w(192)),
            conv("branch3x3_2", w(192), w(320), 3, s=2),
            conv("branch7x7x3_1", c, w(192)),
            conv("branch7x7x3_2", w(192), w(192), (1, 7), p=(0, 3)),
            conv("branch7x7x3_3", w(192), w(192), (7, 1), p=(3, 0)),
            conv("branch7x7x3_4", w(192), w(192), 3, s=2),
        ]
    if kind == "E":
        return [
            conv("branch1x1", c, w(320)),
            conv("branch3x3_1", c, w(384)),
            conv("branch3x3_2a", w(384), w(384), (1, 3), p=(0, 1)),
            conv("branch3x3_2b", w(384), w(384), (3, 1), p=(1, 0)),
            conv("branch3x3dbl_1", c, w(448)),
            conv("branch3x3dbl_2", w(448), w(384), 3, p=1),
            conv("branch3x3dbl_3a", w(384), w(384), (1, 3), p=(0, 1)),
            conv("branch3x3dbl_3b", w(384), w(384), (3, 1), p=(1, 0)),
            conv("branch_pool", c, w(192)),
        ]
    raise ValueError(f"no Inception block kind {kind!r}")


def stem_convs(config: InceptionV3Config) -> list[ConvSpec | str]:
    """The stem in order: a ``ConvSpec`` per BasicConv2d, the max-pools by name."""
    out: list[ConvSpec | str] = []
    for name, cin, cout, k, s, p in STEM:
        if name.startswith("maxpool"):
            out.append(name)
            continue
        cin = config.in_chans if name == "Conv2d_1a_3x3" else config.width(cin)
        out.append(ConvSpec(name, cin, config.width(cout), _k(k), s, _k(p)))
    return out


def pool_mode(config: InceptionV3Config, name: str) -> str:
    """The pooling branch of block ``name`` (A, C, E): "avg" (3x3 / 1 / 1, the zero padding
    counted: torchvision), "avg_exclude_pad" (not counted: the FID blocks) or "max" (FID's
    ``Mixed_7c``, ``FIDInceptionE_2``)."""
    if not config.fid:
        return "avg"
    return "max" if name == "Mixed_7c" else "avg_exclude_pad"


def mixed_blocks(config: InceptionV3Config) -> list[tuple[str, str, list[ConvSpec]]]:
    """(name, kind, convs) of ``Mixed_5b`` .. ``Mixed_7c`` at the config's widths."""
    return [
        (name, kind, block_convs(kind, config.width(cin), arg, config.width))
        for name, kind, cin, arg in MIXED
    ]


def feature_names(config: InceptionV3Config) -> tuple[str, ...]:
    """Every name ``features`` accepts, in forward order: the top-level modules (``LAYERS``:
    ``avgpool`` (B, C, 1, 1) / (B, 1, 1, C)), then the aliases ``pool3`` (the pool features
    flattened, (B, C)) and ``logits`` (``fc``)."""
    return (*LAYERS, "pool3", "logits")


def _shapes(config: InceptionV3Config) -> T.Shapes:
    out: T.Shapes = {}

    def basic(prefix: str, spec: ConvSpec) -> None:
        out[f"{prefix}.conv.weight"] = (spec.cout, spec.cin, *spec.kernel)
        T.batchnorm(out, f"{prefix}.bn", spec.cout)

    for spec in stem_convs(config):
        if isinstance(spec, ConvSpec):
            basic(spec.name, spec)
    for name, _, convs in mixed_blocks(config):
        for spec in convs:
            basic(f"{name}.{spec.name}", spec)
    T.linear(out, "fc", config.num_features, config.num_classes)
    return out


def _validate(config: InceptionV3Config) -> None:
    positive(config, "in_chans", "num_classes", "img_size")
    if config.width_divisor not in (1, 2, 4, 8, 16):
        raise ConfigError(
            f"config field width_divisor: {config.width_divisor} is not 1, 2, 4, 8 or 16"
        )
    if config.resize_input and config.resize_input < MIN_SIZE:
        raise ConfigError(f"config field resize_input: {config.resize_input} < {MIN_SIZE}")
    in_range(config, "dropout", 0, 1, open_high=True)


def _inputs(config: InceptionV3Config, shape: Sequence[int] | None) -> tuple[Input, ...]:
    return (image_input(config, shape, rank=2),)


def _check_inputs(model: Any, framework: str, x: Any, **reference: Any) -> None:
    """The image checks (rank, channels, dtype), then the size: without ``resize_input`` the
    unpadded stem and strided blocks need H, W >= 75."""
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
    if config.resize_input:
        return
    hw = tuple(x.shape[2:] if framework == "torch" else x.shape[1:3])
    if any(s is not None and s < MIN_SIZE for s in hw):
        raise ValueError(
            f"{type(model).__name__}: a {hw[0]}x{hw[1]} image is smaller than Inception-v3's "
            f"{MIN_SIZE} x {MIN_SIZE} minimum; feed a larger one or set resize_input (299)"
        )


register_family(
    Family(
        name="inception_v3",
        config=InceptionV3Config,
        model="InceptionV3",
        shapes=_shapes,
        inputs=_inputs,
        check_inputs=_check_inputs,
        validate=_validate,
        features=feature_names,
        description="Inception-v3: torchvision's inception_v3 and pytorch-fid's FID Inception",
        # the whole topology (every block kind and padding) at 1/16 of the widths: CI-cheap;
        # 139 x 139 by default leaves Mixed_7 3 x 3 (training-mode BatchNorm needs more than
        # one value per channel at batch 1; 75 x 75 leaves 1 x 1); the parity cases add the FID
        # blocks there (where the E_2 max-pool differs from an average) and odd sizes
        tiny=InceptionV3Config(width_divisor=16, num_classes=10, img_size=139),
    )
)

register_variant(
    "inception_v3",
    InceptionV3Config(transform_input=True),
    "torchvision inception_v3 (count_include_pad pools, 1000 classes, transform_input; "
    "AuxLogits dropped)",
)
register_variant(
    "inception_v3_fid",
    InceptionV3Config(
        fid=True, num_classes=FID_CLASSES, resize_input=299, normalize_input=True, img_size=299
    ),
    "pytorch-fid's FID Inception (pt_inception-2015-12-05): FIDInception blocks, 1008 classes, "
    "input resized to 299 (bilinear) and mapped [0, 1] -> [-1, 1]",
)
