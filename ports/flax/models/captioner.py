"""The CNN-LSTM captioner, Flax NNX port of ``zoo.models.captioner``: same module tree and
attribute names (``encoder.resnet.4.0.conv1.kernel``, ``encoder.bn.running_mean``,
``decoder.lstm.weight_ih_l0``), channels-last.

The encoder's ``resnet`` list holds the ResNet port's own modules (``ports.flax.models.resnet``)
in the order of ``nn.Sequential(*resnet.children()[:-1])``. ``bn`` is PyTorch's BatchNorm1d with
momentum 0.01 (PyTorch's sense; ``nnx.BatchNorm`` would take 0.99). Packing: the LSTM runs the
first max(lengths) steps of the padded batch and the packed rows are gathered with
``zoo.packing.packed_order`` (static indexes: ``lengths`` is a Python sequence, static under
``nnx.jit``)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers import BatchNorm2d, MaxPool2d
from ports.flax.layers.linear import Linear
from ports.flax.layers.pool import ReLU
from ports.flax.layers.rnn import LSTM
from ports.flax.models.resnet import BLOCKS, AdaptiveAvgPool2d
from zoo.families.captioner import CaptionerConfig
from zoo.packing import check_lengths, packed_order
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["Captioner", "DecoderRNN", "EncoderCNN", "TokenEmbedding"]


class TokenEmbedding(nnx.Embed):
    """``nn.Embedding``: ids (...) -> (..., features), rows of ``embedding`` in its own dtype
    (``nnx.Embed`` promotes the table to float32 when the model is cast to float64 after
    construction, which broke the float64 gradient parity at 3e-8)."""

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        return jnp.take(self.embedding[...], inputs, axis=0)


class EncoderCNN(nnx.Module):
    """images (B, H, W, C) -> features (B, embed_size); the ResNet's output is a constant
    (``stop_gradient``: the tutorial trains ``linear`` and ``bn`` only)."""

    def __init__(self, config: CaptionerConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        r = config.resnet
        block = BLOCKS[r.block]
        stem = r.planes[0]
        items: list = [
            nnx.Conv(
                r.in_chans,
                stem,
                (7, 7),
                strides=(2, 2),
                padding=((3, 3), (3, 3)),
                use_bias=False,
                rngs=rngs,
            ),
            BatchNorm2d(stem, rngs=rngs),
            ReLU(),
            MaxPool2d(3, 2, 1),
        ]
        for inplanes, planes, blocks, stride in r.stages():
            out = planes * block.expansion
            stage = [block(inplanes, planes, stride, rngs=rngs)]
            stage += [block(out, planes, rngs=rngs) for _ in range(1, blocks)]
            items.append(nnx.List(stage))
        items.append(AdaptiveAvgPool2d())
        self.resnet = nnx.List(items)
        self.linear = Linear(config.num_features, config.embed_size, rngs=rngs)
        self.bn = BatchNorm2d(config.embed_size, momentum=0.01, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = images
        for item in self.resnet:
            if isinstance(item, nnx.List):
                for block in item:
                    x = block(x)
            else:
                x = item(x)
        x = jax.lax.stop_gradient(x).reshape(x.shape[0], -1)
        return self.bn(self.linear(x))


class DecoderRNN(nnx.Module):
    """features (B, E), captions (B, T), lengths -> packed logits (sum(lengths), V)."""

    def __init__(self, config: CaptionerConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        self.embed = TokenEmbedding(config.vocab_size, config.embed_size, rngs=rngs)
        self.lstm = LSTM(config.embed_size, config.hidden_size, config.num_layers, rngs=rngs)
        self.linear = Linear(config.hidden_size, config.vocab_size, rngs=rngs)
        self.max_seg_length = config.max_seg_length

    def __call__(
        self, features: jax.Array, captions: jax.Array, lengths: Sequence[int]
    ) -> jax.Array:
        lengths = check_lengths(lengths, captions.shape[0], captions.shape[1] + 1)
        embeddings = self.embed(captions)
        x = jnp.concatenate([features[:, None], embeddings], axis=1)[:, : lengths[0]]
        hiddens, _ = self.lstm(x)
        b_idx, t_idx = packed_order(lengths)
        return self.linear(hiddens[b_idx, t_idx])

    def greedy(self, features: jax.Array, states=None) -> tuple[jax.Array, jax.Array]:
        """The tutorial's greedy loop: ids (B, max_seg_length) int32 and each step's logits
        (B, max_seg_length, V)."""
        ids, logits = [], []
        inputs = features[:, None]
        for _ in range(self.max_seg_length):
            hiddens, states = self.lstm(inputs, states)
            outputs = self.linear(hiddens[:, 0])
            predicted = jnp.argmax(outputs, axis=1).astype(jnp.int32)
            ids.append(predicted)
            logits.append(outputs)
            inputs = self.embed(predicted)[:, None]
        return jnp.stack(ids, axis=1), jnp.stack(logits, axis=1)

    def sample(self, features: jax.Array, states=None) -> jax.Array:
        return self.greedy(features, states)[0]


@register_model("captioner", "flax")
class Captioner(nnx.Module):
    """``encoder`` + ``decoder``. ``__call__(images (B, H, W, C), captions (B, T),
    lengths=None)``: packed logits (sum(lengths), V) (lengths default: every caption's full
    length T); ``sample(images)``: greedy ids (B, max_seg_length). Training mode
    (``model.train()``): batch statistics, running statistics updated as PyTorch does."""

    def __init__(self, config: CaptionerConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        self.encoder = EncoderCNN(config, rngs=rngs)
        self.decoder = DecoderRNN(config, rngs=rngs)

    def __call__(
        self, images: jax.Array, captions: jax.Array, lengths: Sequence[int] | None = None
    ) -> jax.Array:
        check_inputs(self, "flax", images, captions)
        if lengths is None:
            lengths = [captions.shape[1]] * captions.shape[0]
        return self.decoder(self.encoder(images), captions, lengths)

    def greedy(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Greedy ids and each step's logits (in the module's current mode: ``model.eval()``
        as the tutorial samples)."""
        return self.decoder.greedy(self.encoder(images))

    def sample(self, images: jax.Array) -> jax.Array:
        return self.greedy(images)[0]
