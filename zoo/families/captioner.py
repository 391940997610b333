"""The CNN-LSTM image captioner of yunjey/pytorch-tutorial (``tutorials/03-advanced/
image_captioning/model.py``): config, variants, state-dict table, inputs. Framework-free.

``Captioner`` = ``encoder`` (the tutorial's ``EncoderCNN``: a ResNet without its ``fc`` as
``resnet = nn.Sequential(*children[:-1])`` -- ``resnet.0`` conv1, ``resnet.1`` bn1, ``resnet.2``
relu, ``resnet.3`` maxpool, ``resnet.4..7`` layer1..4, ``resnet.8`` avgpool --, ``linear`` to
the embedding, ``bn = BatchNorm1d(embed, momentum=0.01)``) + ``decoder`` (``DecoderRNN``:
``embed``, ``lstm`` (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}``, gates i, f, g, o), ``linear`` to the vocabulary). The ResNet is the zoo's
(``zoo.families.resnet``: any depth; the tutorial's is ResNet-152). The tutorial saves the two
halves as two state dicts; ``weight_convert.layouts.captioner`` reads them as one model under
``encoder.`` / ``decoder.``.

The model's forward is the tutorial's training forward: ``(images, captions, lengths)`` ->
logits in ``pack_padded_sequence`` order (``zoo.packing.packed_order``), one row per
(sequence, step) with step < its length; ``lengths`` (decreasing, as ``enforce_sorted``) default
to every caption's full length. ``sample(images)``: greedy decoding, ``max_seg_length`` (20)
tokens. Vocabulary and tokenizer: ``zoo.vocabulary``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo import shape_table as T
from zoo.config_checks import ConfigError, positive
from zoo.families.resnet import EXPANSION, ResNetConfig
from zoo.families.resnet import _shapes as _resnet_shapes
from zoo.family import HEAD, NOT_ARCH, Family, Input, image_input, register_family, register_variant
from zoo.tensor_format import Format

__all__ = ["CaptionerConfig", "RESNET_ITEMS", "resnet_key"]

#: ResNet's children in ``nn.Sequential(*children[:-1])``: the index of each one
RESNET_ITEMS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def resnet_key(key: str) -> str:
    """A ResNet state-dict key as the encoder's ``resnet`` Sequential names it:
    ``layer1.0.conv1.weight`` -> ``resnet.4.0.conv1.weight``."""
    head, _, rest = key.partition(".")
    return f"resnet.{RESNET_ITEMS.index(head)}.{rest}"


@dataclass(frozen=True)
class CaptionerConfig:
    """EncoderCNN(embed_size) on a ResNet (``block``, ``layers``, ``planes``, ``in_chans`` as
    ``ResNetConfig``'s) + DecoderRNN(embed_size, hidden_size, vocab_size, num_layers).

    Inputs (reference): images (B, in_chans, H, W) float, any H, W (global pooling); captions
    (B, T) integer token ids; lengths (optional, B ints decreasing in 1..T). Output: packed
    logits (sum(lengths), vocab_size).
    """

    block: str = "bottleneck"
    layers: tuple[int, int, int, int] = (3, 8, 36, 3)
    planes: tuple[int, int, int, int] = (64, 128, 256, 512)
    in_chans: int = 3
    embed_size: int = 256
    hidden_size: int = 512
    #: the vocabulary's size: the checkpoint's (``zoo.vocabulary.build_vocab`` of the captions)
    vocab_size: int = field(default=10000, metadata=HEAD)
    num_layers: int = 1
    #: greedy decoding's length (the tutorial's ``max_seg_length``)
    max_seg_length: int = field(default=20, metadata=NOT_ARCH)
    #: the example input's side and caption length
    img_size: int = field(default=224, metadata=NOT_ARCH)
    caption_length: int = field(default=12, metadata=NOT_ARCH)

    @property
    def family(self) -> str:
        return "captioner"

    @property
    def resnet(self) -> ResNetConfig:
        """The encoder's ResNet (its ``fc``, which the encoder drops, of one class)."""
        return ResNetConfig(
            block=self.block,
            layers=self.layers,
            planes=self.planes,
            in_chans=self.in_chans,
            num_classes=1,
        )

    @property
    def num_features(self) -> int:
        """The pooled ResNet feature's width (``resnet.fc.in_features``)."""
        return self.planes[3] * EXPANSION[self.block]


def _shapes(config: CaptionerConfig) -> T.Shapes:
    out: T.Shapes = {}
    for key, shape in _resnet_shapes(config.resnet).items():
        if not key.startswith("fc."):
            out["encoder." + resnet_key(key)] = shape
    T.linear(out, "encoder.linear", config.num_features, config.embed_size)
    T.batchnorm(out, "encoder.bn", config.embed_size)
    out["decoder.embed.weight"] = (config.vocab_size, config.embed_size)
    h = config.hidden_size
    for k in range(config.num_layers):
        width = config.embed_size if k == 0 else h
        out[f"decoder.lstm.weight_ih_l{k}"] = (4 * h, width)
        out[f"decoder.lstm.weight_hh_l{k}"] = (4 * h, h)
        out[f"decoder.lstm.bias_ih_l{k}"] = (4 * h,)
        out[f"decoder.lstm.bias_hh_l{k}"] = (4 * h,)
    T.linear(out, "decoder.linear", h, config.vocab_size)
    return out


def _validate(config: CaptionerConfig) -> None:
    if config.block not in EXPANSION:
        raise ConfigError(f"config field block: {config.block!r} is not one of {list(EXPANSION)}")
    if len(config.layers) != 4 or len(config.planes) != 4:
        raise ConfigError("config fields layers / planes: four stages each")
    positive(
        config,
        "layers",
        "planes",
        "in_chans",
        "embed_size",
        "hidden_size",
        "vocab_size",
        "num_layers",
        "max_seg_length",
        "caption_length",
    )
    if config.vocab_size < 4:
        raise ConfigError(
            f"config field vocab_size: {config.vocab_size} leaves no room for <pad>, <start>, "
            "<end>, <unk>"
        )


def _inputs(config: CaptionerConfig, shape: Sequence[int] | None) -> tuple[Input, ...]:
    if shape is None:  # two images: the encoder's BatchNorm1d trains on more than one value
        shape = (2, config.in_chans, config.img_size, config.img_size)
    image = image_input(config, shape, rank=2)
    vocab = config.vocab_size

    def tokens(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.integers(1, vocab, size=shape).astype(np.int32)

    captions = (image.shape[0], config.caption_length)
    return (image, Input(captions, Format.CHANNELS_LAST, sample=tokens, name="captions"))


def _check_inputs(model: Any, framework: str, images: Any, captions: Any, **reference) -> None:
    """The image checks, then the captions: (B, T) integer ids for the same batch."""
    from zoo.validate import check_image

    config = model.config
    check_image(
        model,
        images.shape,
        images.dtype,
        framework=framework,
        channels=config.in_chans,
        spatial_rank=2,
        **reference,
    )
    name = type(model).__name__
    shape = tuple(captions.shape)
    if len(shape) != 2:
        raise ValueError(f"{name} expects captions (B, T) of token ids, got shape {shape}")
    kind = str(getattr(captions.dtype, "name", captions.dtype)).replace("torch.", "")
    if not kind.startswith(("int", "uint")):
        raise ValueError(f"{name} expects integer token ids as captions, got {kind}")
    if None not in (shape[0], images.shape[0]) and shape[0] != images.shape[0]:
        raise ValueError(f"{name}: {images.shape[0]} images but {shape[0]} captions")


register_family(
    Family(
        name="captioner",
        config=CaptionerConfig,
        model="Captioner",
        shapes=_shapes,
        inputs=_inputs,
        check_inputs=_check_inputs,
        validate=_validate,
        description="yunjey/pytorch-tutorial's CNN-LSTM captioner (ResNet encoder, LSTM decoder)",
        # Bottleneck stages of one block each (layer1.0's downsample, strided stages), a
        # two-layer LSTM (the second layer's input is the first's hidden state)
        tiny=CaptionerConfig(
            layers=(1, 1, 1, 1),
            planes=(4, 4, 8, 8),
            embed_size=8,
            hidden_size=12,
            vocab_size=23,
            num_layers=2,
            img_size=32,
            caption_length=7,
        ),
    )
)

register_variant(
    "captioner_resnet152",
    CaptionerConfig(),
    "pytorch-tutorial image captioning: ResNet-152 encoder, embed 256, LSTM 512 x 1, COCO vocab",
)
