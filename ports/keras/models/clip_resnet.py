"""CLIP's ResNet image encoder, Keras 3 port of ``zoo.models.clip_resnet``: same module tree and
names (``root/layer1-0/downsample-0/kernel``, ``root/layer2-0/bn3/moving_mean``,
``root/attnpool/positional_embedding``), channels-last, ``keras.ops`` only. BatchNorm is the
port's ``BatchNorm2d`` (PyTorch's eps 1e-5 and momentum, not Keras's).

The 3 x 3 convolutions pad one pixel on each side explicitly, as PyTorch's ``padding=1``
(Keras' "same" pads a strided convolution asymmetrically).
"""

from __future__ import annotations

import keras
from keras import ops

from ports.keras.layers.dense import Dense
from ports.keras.layers.norm import BatchNorm2d
from ports.keras.layers.window import Tensor
from ports.keras.layers.window_attention import dot_product_attention
from ports.keras.models.base import ZooModel
from zoo.families.clip_resnet import (
    EXPANSION,
    ClipResNetConfig,
    has_downsample,
    stages,
)
from zoo.family import check_features
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["AttentionPool2d", "ModifiedResNet"]


def _conv(filters: int, kernel: int, name: str, stride: int = 1) -> keras.layers.Conv2D:
    """A bias-free convolution, unpadded (3 x 3 ones get their pixel from ``_pad1``)."""
    return keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="valid", use_bias=False, name=name
    )


def _pad1(x: Tensor) -> Tensor:
    """One zero pixel on each side of H and W: PyTorch's ``padding=1``."""
    return ops.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])


def _pool(stride: int, name: str) -> keras.layers.Layer:
    """``nn.AvgPool2d(stride)`` (floors), or Identity at 1."""
    if stride == 1:
        return keras.layers.Identity(name=name)
    return keras.layers.AveragePooling2D(stride, strides=stride, padding="valid", name=name)


class Bottleneck(keras.layers.Layer):
    """1 x 1 conv -> 3 x 3 conv -> average pool of ``stride`` -> 1 x 1 conv to 4 x planes, each
    with BatchNorm (ReLU on the first two), plus the pooled shortcut (``downsample-0`` conv,
    ``downsample-1`` BatchNorm where the shape changes), then ReLU.
    (B, H, W, inplanes) -> (B, H // stride, W // stride, 4 planes)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        out = planes * EXPANSION
        self.conv1 = _conv(planes, 1, "conv1")
        self.bn1 = BatchNorm2d(planes, name="bn1")
        self.relu1 = keras.layers.ReLU(name="relu1")
        self.conv2 = _conv(planes, 3, "conv2")
        self.bn2 = BatchNorm2d(planes, name="bn2")
        self.relu2 = keras.layers.ReLU(name="relu2")
        self.avgpool = _pool(stride, "avgpool")
        self.conv3 = _conv(out, 1, "conv3")
        self.bn3 = BatchNorm2d(out, name="bn3")
        self.relu3 = keras.layers.ReLU(name="relu3")
        self.downsample = None
        if has_downsample(inplanes, planes, stride):
            self.downsample = [_conv(out, 1, "downsample-0"), BatchNorm2d(out, name="downsample-1")]

    def build(self, input_shape: tuple) -> None:
        b, planes, out = input_shape[0], self.planes, self.planes * EXPANSION
        open_map = (b, None, None)
        self.conv1.build((*open_map, self.inplanes))
        for layer in (self.bn1, self.relu1, self.conv2, self.bn2, self.relu2, self.avgpool):
            layer.build((*open_map, planes))
        self.conv3.build((*open_map, planes))
        self.bn3.build((*open_map, out))
        self.relu3.build((*open_map, out))
        if self.downsample is not None:
            self.downsample[0].build((*open_map, self.inplanes))
            self.downsample[1].build((*open_map, out))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x), training=training))
        out = self.relu2(self.bn2(self.conv2(_pad1(out)), training=training))
        out = self.bn3(self.conv3(self.avgpool(out)), training=training)
        identity = x
        if self.downsample is not None:
            if self.stride > 1:  # OpenAI's downsample["-1"]
                identity = ops.average_pool(identity, self.stride, self.stride, "valid")
            identity = self.downsample[1](self.downsample[0](identity), training=training)
        return self.relu3(out + identity)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        s = self.stride
        hw = tuple(None if d is None else d // s for d in input_shape[1:3])
        return (input_shape[0], *hw, self.planes * EXPANSION)


class AttentionPool2d(keras.layers.Layer):
    """The mean token (prepended to the map's tokens, ``positional_embedding`` added to all)
    attends over them: ``q_proj`` / ``k_proj`` / ``v_proj``, ``num_heads`` heads, ``c_proj``.
    (B, H, W, embed_dim), H * W + 1 rows of ``positional_embedding`` -> (B, output_dim)."""

    def __init__(
        self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.spacial_dim, self.embed_dim, self.num_heads = spacial_dim, embed_dim, num_heads
        self.output_dim = output_dim
        self.k_proj = Dense(embed_dim, name="k_proj")
        self.q_proj = Dense(embed_dim, name="q_proj")
        self.v_proj = Dense(embed_dim, name="v_proj")
        self.c_proj = Dense(output_dim, name="c_proj")

    def build(self, input_shape: tuple) -> None:
        e = self.embed_dim
        self.positional_embedding = self.add_weight(
            name="positional_embedding",
            shape=(self.spacial_dim**2 + 1, e),
            initializer=keras.initializers.RandomNormal(stddev=e**-0.5),
        )
        for layer in (self.k_proj, self.q_proj, self.v_proj, self.c_proj):
            layer.build((input_shape[0], None, e))

    def call(self, x: Tensor) -> Tensor:
        c, heads = self.embed_dim, self.num_heads
        x = ops.reshape(x, (-1, x.shape[1] * x.shape[2], c))  # row-major, as torch's flatten
        x = ops.concatenate([ops.mean(x, axis=1, keepdims=True), x], axis=1)
        x = x + ops.cast(self.positional_embedding, x.dtype)
        n = x.shape[1]
        q = ops.reshape(self.q_proj(x[:, :1]), (-1, 1, heads, c // heads))
        k = ops.reshape(self.k_proj(x), (-1, n, heads, c // heads))
        v = ops.reshape(self.v_proj(x), (-1, n, heads, c // heads))
        out = dot_product_attention(q, k, v, None, (c // heads) ** -0.5)  # (B, 1, heads, hd)
        return self.c_proj(ops.reshape(out, (-1, c)))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.output_dim)


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("clip_resnet", "keras")
class ModifiedResNet(ZooModel):
    """CLIP ResNet image encoder.

    Input: (B, H, W, in_chans) channels-last, normalized (``CLIP_MEAN`` / ``CLIP_STD``),
    reducing to the trained (img_size // 32) grid at ``attnpool``. Output: the image embedding
    (B, output_dim); with ``config.features``, a dict of those outputs in that order (maps
    (B, H, W, C), ``attnpool`` (B, output_dim)). BatchNorm uses the running statistics unless
    called with ``training=True``.
    """

    def __init__(self, config: ClipResNetConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        check_features(config)
        self.config = config
        half, w = config.width // 2, config.width
        self.conv1 = _conv(half, 3, "conv1", stride=2)
        self.bn1 = BatchNorm2d(half, name="bn1")
        self.conv2 = _conv(half, 3, "conv2")
        self.bn2 = BatchNorm2d(half, name="bn2")
        self.conv3 = _conv(w, 3, "conv3")
        self.bn3 = BatchNorm2d(w, name="bn3")
        self.avgpool = _pool(2, "avgpool")
        self.relu = keras.layers.ReLU(name="relu")
        for i, blocks in enumerate(stages(config), start=1):
            stage = [Bottleneck(*b, name=f"layer{i}-{j}") for j, b in enumerate(blocks)]
            setattr(self, f"layer{i}", stage)
        self.attnpool = AttentionPool2d(
            config.grid, config.embed_dim, config.heads, config.output_dim, name="attnpool"
        )

    def build(self, input_shape: tuple) -> None:
        config, b = self.config, input_shape[0]
        half, w = config.width // 2, config.width
        for layer, channels in (
            (self.conv1, config.in_chans),
            (self.bn1, half),
            (self.conv2, half),
            (self.bn2, half),
            (self.conv3, half),
            (self.bn3, w),
            (self.avgpool, w),
            (self.relu, w),
        ):
            layer.build((b, None, None, channels))
        for i in range(1, 5):
            for block in getattr(self, f"layer{i}"):
                block.build((b, None, None, block.inplanes))
        self.attnpool.build((b, config.grid, config.grid, config.embed_dim))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor | dict[str, Tensor]:
        check_inputs(self, "keras", x)
        wanted = self.config.features
        out: dict[str, Tensor] = {}

        def keep(name: str, value: Tensor) -> bool:
            if name in wanted:
                out[name] = value
            return bool(wanted) and len(out) == len(wanted)

        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = self.relu(bn(conv(_pad1(x)), training=training))
        x = self.avgpool(x)
        if keep("stem", x):
            return {n: out[n] for n in wanted}
        for i in range(1, 5):
            for j, block in enumerate(getattr(self, f"layer{i}")):
                x = block(x, training=training)
                if keep(f"layer{i}.{j}", x):
                    return {n: out[n] for n in wanted}
            if keep(f"layer{i}", x):
                return {n: out[n] for n in wanted}
        x = self.attnpool(x)
        keep("attnpool", x)
        return {n: out[n] for n in wanted} if wanted else x

    def compute_output_shape(self, input_shape: tuple):
        config, b = self.config, input_shape[0]
        if not config.features:
            return (b, config.output_dim)
        shapes = {"attnpool": (b, config.output_dim)}
        hw = [None if d is None else (d - 1) // 2 + 1 for d in input_shape[1:3]]
        hw = [None if d is None else d // 2 for d in hw]
        shapes["stem"] = (b, *hw, config.width)
        for i, blocks in enumerate(stages(config), start=1):
            hw = [None if d is None else d // blocks[0][2] for d in hw]
            c = blocks[0][1] * EXPANSION
            shapes[f"layer{i}"] = (b, *hw, c)
            shapes.update({f"layer{i}.{j}": (b, *hw, c) for j in range(len(blocks))})
        return {n: shapes[n] for n in config.features}
