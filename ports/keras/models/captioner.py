"""The CNN-LSTM captioner, Keras 3 port of ``zoo.models.captioner``: same module tree and names
(``root/encoder/resnet-4-0/conv1/kernel``, ``root/encoder/bn/moving_mean``,
``root/decoder/lstm/weight_ih_l0``), channels-last, ``keras.ops`` only.

The encoder's ``resnet`` list holds the ResNet port's own layers (``ports.keras.models.resnet``:
``PaddedConv2D``, ``BatchNorm2d``, ``MaxPool2d``, the block classes) in the order of
``nn.Sequential(*resnet.children()[:-1])``, named ``resnet-N`` (``resnet-N-M`` for the blocks
of stage N) so the paths read as the tutorial's keys. ``bn`` is PyTorch's BatchNorm1d with
momentum 0.01 (PyTorch's sense: the new batch's weight; Keras's own layer would take 0.99).
Packing: the LSTM runs the first max(lengths) steps of the padded batch and the packed rows
are gathered with ``zoo.packing.packed_order`` (static indexes)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from ports.keras.layers import BatchNorm2d, MaxPool2d
from ports.keras.layers.dense import Dense
from ports.keras.layers.rnn import LSTM
from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
from ports.keras.models.resnet import BLOCKS, PaddedConv2D
from zoo.families.captioner import CaptionerConfig
from zoo.packing import check_lengths, packed_order
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["Captioner", "DecoderRNN", "EncoderCNN", "TokenEmbedding"]


@keras.saving.register_keras_serializable(package="vit_zoo")
class TokenEmbedding(keras.layers.Layer):
    """``nn.Embedding(num_embeddings, embedding_dim)``: ids (...) -> (..., dim), the table in
    the variable ``embedding`` (the name the layout rules map to ``weight``; Keras's own layer
    calls it ``embeddings``). PyTorch's initializer, N(0, 1)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim

    def build(self, input_shape: tuple | None = None) -> None:
        self.embedding = self.add_weight(
            name="embedding",
            shape=(self.num_embeddings, self.embedding_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
        )

    def call(self, ids: Tensor) -> Tensor:
        return ops.take(self.embedding, ops.cast(ids, "int32"), axis=0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape, self.embedding_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
        }


@keras.saving.register_keras_serializable(package="vit_zoo")
class EncoderCNN(keras.layers.Layer):
    """images (B, H, W, C) -> features (B, embed_size); the ResNet's output is a constant
    (``stop_gradient``: the tutorial trains ``linear`` and ``bn`` only)."""

    def __init__(self, config: CaptionerConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        r = config.resnet
        block = BLOCKS[r.block]
        stem = r.planes[0]
        self.resnet = [
            PaddedConv2D(stem, 7, 2, name="resnet-0"),
            BatchNorm2d(stem, name="resnet-1"),
            keras.layers.ReLU(name="resnet-2"),
            MaxPool2d(3, 2, 1, name="resnet-3"),
        ]
        for k, (inplanes, planes, blocks, stride) in enumerate(r.stages(), start=4):
            out = planes * block.expansion
            items = [block(inplanes, planes, stride, name=f"resnet-{k}-0")]
            items += [block(out, planes, name=f"resnet-{k}-{m}") for m in range(1, blocks)]
            self.resnet.append(items)
        self.resnet.append(keras.layers.GlobalAveragePooling2D(keepdims=True, name="resnet-8"))
        self.linear = Dense(config.embed_size, name="linear")
        self.bn = BatchNorm2d(config.embed_size, momentum=0.01, name="bn")

    def build(self, input_shape: tuple | None = None) -> None:
        stem = self.config.planes[0]
        self.resnet[0].build((None, None, None, self.config.in_chans))
        self.resnet[1].build((None, None, None, stem))
        for items in self.resnet[4:8]:
            for block in items:
                block.build((None, None, None, block.inplanes))
        self.linear.build((None, self.config.num_features))
        self.bn.build((None, self.config.embed_size))

    def call(self, images: Tensor, training: bool | None = None) -> Tensor:
        conv, bn, relu, maxpool = self.resnet[:4]
        x = maxpool(relu(bn(conv(images), training=training)))
        for items in self.resnet[4:8]:
            for block in items:
                x = block(x, training=training)
        x = ops.stop_gradient(self.resnet[8](x))
        x = ops.reshape(x, (-1, self.config.num_features))
        return self.bn(self.linear(x), training=training)


@keras.saving.register_keras_serializable(package="vit_zoo")
class DecoderRNN(keras.layers.Layer):
    """features (B, E), captions (B, T), lengths -> packed logits (sum(lengths), V)."""

    def __init__(self, config: CaptionerConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.embed = TokenEmbedding(config.vocab_size, config.embed_size, name="embed")
        self.lstm = LSTM(config.embed_size, config.hidden_size, config.num_layers, name="lstm")
        self.linear = Dense(config.vocab_size, name="linear")
        self.max_seg_length = config.max_seg_length

    def build(self, input_shape: tuple | None = None) -> None:
        self.embed.build(None)
        self.lstm.build(None)
        self.linear.build((None, self.config.hidden_size))

    def call(self, features: Tensor, captions: Tensor, lengths: Sequence[int]) -> Tensor:
        lengths = check_lengths(lengths, captions.shape[0], captions.shape[1] + 1)
        embeddings = self.embed(captions)
        x = ops.concatenate([features[:, None], embeddings], axis=1)[:, : lengths[0]]
        hiddens, _ = self.lstm(x)
        b_idx, t_idx = packed_order(lengths)
        flat = ops.reshape(hiddens, (-1, self.config.hidden_size))
        rows = ops.take(flat, ops.convert_to_tensor(b_idx * lengths[0] + t_idx), axis=0)
        return self.linear(rows)

    def greedy(self, features: Tensor, states=None) -> tuple[Tensor, Tensor]:
        """The tutorial's greedy loop: ids (B, max_seg_length) int32 and each step's logits
        (B, max_seg_length, V)."""
        ids, logits = [], []
        inputs = features[:, None]
        for _ in range(self.max_seg_length):
            hiddens, states = self.lstm(inputs, states)
            outputs = self.linear(hiddens[:, 0])
            predicted = ops.cast(ops.argmax(outputs, axis=1), "int32")
            ids.append(predicted)
            logits.append(outputs)
            inputs = self.embed(predicted)[:, None]
        return ops.stack(ids, axis=1), ops.stack(logits, axis=1)

    def sample(self, features: Tensor, states=None) -> Tensor:
        return self.greedy(features, states)[0]


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("captioner", "keras")
class Captioner(ZooModel):
    """``encoder`` + ``decoder``. ``call(images (B, H, W, C), captions (B, T), lengths=None)``:
    packed logits (sum(lengths), V) (lengths default: every caption's full length T, in packed
    order: time-major); ``sample(images)``: greedy ids (B, max_seg_length)."""

    def __init__(self, config: CaptionerConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.encoder = EncoderCNN(config, name="encoder")
        self.decoder = DecoderRNN(config, name="decoder")

    def build(self, input_shape=None) -> None:
        self.encoder.build(None)
        self.decoder.build(None)

    def call(
        self,
        images: Tensor,
        captions: Tensor,
        lengths: Sequence[int] | None = None,
        training: bool | None = None,
    ) -> Tensor:
        check_inputs(self, "keras", images, captions)
        if lengths is None:
            lengths = [captions.shape[1]] * captions.shape[0]
        features = self.encoder(images, training=training)
        return self.decoder(features, captions, lengths=list(lengths))

    def greedy(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.decoder.greedy(self.encoder(images, training=False))

    def sample(self, images: Tensor) -> Tensor:
        return self.greedy(images)[0]

    def compute_output_shape(self, images_shape: tuple, captions_shape: tuple, *args) -> tuple:
        b, t = captions_shape
        rows = None if b is None or t is None else b * t
        return (rows, self.config.vocab_size)
