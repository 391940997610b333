"""CLIP's ViT image encoder, Keras 3 port of ``zoo.models.clip_vit``: same module tree and names
(``root/transformer/resblocks-0/attn/in_proj_weight``, ``root/transformer/resblocks-0/mlp/c_fc``,
``root/proj``), channels-last, ``keras.ops`` only.

``in_proj_weight`` / ``in_proj_bias`` are plain variables in PyTorch's layout (3 width, width),
applied as ``x @ in_proj_weight.T + in_proj_bias``, and ``proj`` (width, output_dim) as
``x @ proj``: the reference's parameters, so they convert as they are.
"""

from __future__ import annotations

import keras
from keras import ops

from ports.keras.layers.dense import Dense
from ports.keras.layers.norm import LayerNorm
from ports.keras.layers.window import Tensor
from ports.keras.layers.window_attention import dot_product_attention
from ports.keras.models.base import ZooModel
from zoo.families.clip_vit import ClipViTConfig
from zoo.family import check_features
from zoo.registry import register_model
from zoo.validate import check_inputs

#: the generic names (Mlp, Transformer, LayerNorm) stay unexported: exports are unique across
#: the families
__all__ = ["MultiheadAttention", "QuickGELU", "ResidualAttentionBlock", "VisionTransformer"]


class QuickGELU(keras.layers.Layer):
    """``x * sigmoid(1.702 x)``: CLIP's activation (not GELU). Any shape."""

    def call(self, x: Tensor) -> Tensor:
        return x * ops.sigmoid(1.702 * x)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


class MultiheadAttention(keras.layers.Layer):
    """Self-attention with ``torch.nn.MultiheadAttention``'s parameters: ``in_proj_weight``
    (3 dim, dim), ``in_proj_bias`` (3 dim,): the q, k, v rows; ``out_proj`` Dense.
    (B, N, dim) -> (B, N, dim)."""

    def __init__(self, dim: int, heads: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim, self.heads = dim, heads
        self.out_proj = Dense(dim, name="out_proj")

    def build(self, input_shape: tuple) -> None:
        d = self.dim
        self.in_proj_weight = self.add_weight(
            name="in_proj_weight", shape=(3 * d, d), initializer="glorot_uniform"
        )
        self.in_proj_bias = self.add_weight(
            name="in_proj_bias", shape=(3 * d,), initializer="zeros"
        )
        self.out_proj.build((*input_shape[:-1], d))

    def call(self, x: Tensor) -> Tensor:
        n, d, heads = x.shape[1], self.dim, self.heads
        weight = ops.cast(self.in_proj_weight, x.dtype)
        qkv = ops.matmul(x, ops.transpose(weight)) + ops.cast(self.in_proj_bias, x.dtype)
        q, k, v = ops.unstack(ops.reshape(qkv, (-1, n, 3, heads, d // heads)), 3, axis=2)
        out = dot_product_attention(q, k, v, None, (d // heads) ** -0.5)  # (B, N, heads, hd)
        return self.out_proj(ops.reshape(out, (-1, n, d)))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


class Mlp(keras.layers.Layer):
    """c_fc -> QuickGELU (``gelu``) -> c_proj. (..., dim) -> same."""

    def __init__(self, dim: int, hidden: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim, self.hidden = dim, hidden
        self.c_fc = Dense(hidden, name="c_fc")
        self.gelu = QuickGELU(name="gelu")
        self.c_proj = Dense(dim, name="c_proj")

    def build(self, input_shape: tuple) -> None:
        lead = tuple(input_shape[:-1])
        self.c_fc.build((*lead, self.dim))
        self.gelu.build((*lead, self.hidden))
        self.c_proj.build((*lead, self.hidden))

    def call(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


class ResidualAttentionBlock(keras.layers.Layer):
    """x + attn(ln_1(x)), then + mlp(ln_2(x)). (B, N, dim) -> same."""

    def __init__(self, dim: int, heads: int, hidden: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        self.attn = MultiheadAttention(dim, heads, name="attn")
        self.ln_1 = LayerNorm(dim, name="ln_1")
        self.mlp = Mlp(dim, hidden, name="mlp")
        self.ln_2 = LayerNorm(dim, name="ln_2")

    def build(self, input_shape: tuple) -> None:
        shape = (*input_shape[:-1], self.dim)
        for layer in (self.attn, self.ln_1, self.mlp, self.ln_2):
            layer.build(shape)

    def call(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


class Transformer(keras.layers.Layer):
    """``resblocks``: the residual blocks (``resblocks-i``), applied in order by
    ``VisionTransformer``."""

    def __init__(self, width: int, layers: int, heads: int, hidden: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.width = width
        self.resblocks = [
            ResidualAttentionBlock(width, heads, hidden, name=f"resblocks-{i}")
            for i in range(layers)
        ]

    def build(self, input_shape: tuple) -> None:
        for block in self.resblocks:
            block.build((*input_shape[:-1], self.width))


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("clip_vit", "keras")
class VisionTransformer(ZooModel):
    """CLIP ViT image encoder.

    Input: (B, H, W, in_chans) channels-last, normalized (``CLIP_MEAN`` / ``CLIP_STD``), with
    (H // patch, W // patch) the trained grid. Output: the image embedding (B, output_dim);
    with ``config.features``, a dict of those outputs in that order (tokens (B, N, width),
    ``proj`` (B, output_dim)).
    """

    def __init__(self, config: ClipViTConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        check_features(config)
        self.config = config
        w, p = config.width, config.patch_size
        self.conv1 = keras.layers.Conv2D(
            w, p, strides=p, padding="valid", use_bias=False, name="conv1"
        )
        self.ln_pre = LayerNorm(w, name="ln_pre")
        hidden = int(w * config.mlp_ratio)
        self.transformer = Transformer(w, config.layers, config.heads, hidden, name="transformer")
        self.ln_post = LayerNorm(w, name="ln_post")

    def build(self, input_shape: tuple) -> None:
        config, batch, w = self.config, input_shape[0], self.config.width
        normal = keras.initializers.RandomNormal(stddev=w**-0.5)
        self.class_embedding = self.add_weight(
            name="class_embedding", shape=(w,), initializer=normal
        )
        self.positional_embedding = self.add_weight(
            name="positional_embedding", shape=(config.tokens, w), initializer=normal
        )
        self.proj = self.add_weight(name="proj", shape=(w, config.output_dim), initializer=normal)
        self.conv1.build((batch, None, None, config.in_chans))
        tokens = (batch, config.tokens, w)
        self.ln_pre.build(tokens)
        self.transformer.build(tokens)
        self.ln_post.build(tokens)

    def call(self, x: Tensor, training: bool | None = None) -> Tensor | dict[str, Tensor]:
        check_inputs(self, "keras", x)
        wanted = self.config.features
        out: dict[str, Tensor] = {}

        def keep(name: str, value: Tensor) -> bool:
            if name in wanted:
                out[name] = value
            return bool(wanted) and len(out) == len(wanted)

        x = self.conv1(x)
        w = self.config.width
        x = ops.reshape(x, (-1, x.shape[1] * x.shape[2], w))  # (B, grid^2, width), row-major
        cls = ops.zeros_like(x[:, :1]) + ops.cast(self.class_embedding, x.dtype)  # (B, 1, width)
        x = ops.concatenate([cls, x], axis=1) + ops.cast(self.positional_embedding, x.dtype)
        x = self.ln_pre(x)
        if keep("ln_pre", x):
            return {n: out[n] for n in wanted}
        for i, block in enumerate(self.transformer.resblocks):
            x = block(x)
            if keep(f"transformer.resblocks.{i}", x):
                return {n: out[n] for n in wanted}
        x = self.ln_post(x)
        if keep("ln_post", x):
            return {n: out[n] for n in wanted}
        x = ops.matmul(x[:, 0], ops.cast(self.proj, x.dtype))
        keep("proj", x)
        return {n: out[n] for n in wanted} if wanted else x

    def compute_output_shape(self, input_shape: tuple):
        config, batch = self.config, input_shape[0]
        tokens = (batch, config.tokens, config.width)
        if not config.features:
            return (batch, config.output_dim)
        return {n: (batch, config.output_dim) if n == "proj" else tokens for n in config.features}
