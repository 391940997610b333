"""CLIP's ResNet image encoder, Flax NNX port of ``zoo.models.clip_resnet``: same module tree
and attribute names (``layer1.0.downsample.0.kernel``, ``layer2.0.bn3.running_mean``,
``attnpool.positional_embedding``), channels-last. BatchNorm is the port's ``BatchNorm2d``
(PyTorch's eps and momentum), built in inference mode (running statistics) like the
reference's ``build_model``; ``model.train()`` / ``nnx.view(model, deterministic=False)``
trains it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers.linear import Linear
from ports.flax.layers.norm import BatchNorm2d
from ports.flax.layers.window_attention import dot_product_attention
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


class _ReLU(nnx.Module):
    """``nn.ReLU`` as a module, so that its calls line up with the reference's. Any shape."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


class _AvgPool2d(nnx.Module):
    """``nn.AvgPool2d(stride)`` channels-last (floors; Identity at 1). (B, H, W, C) ->
    (B, H // stride, W // stride, C)."""

    def __init__(self, stride: int) -> None:
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.stride
        return x if s == 1 else nnx.avg_pool(x, (s, s), strides=(s, s), padding="VALID")


def _conv(i: int, o: int, kernel: int, rngs: nnx.Rngs, stride: int = 1) -> nnx.Conv:
    """A bias-free convolution; 3 x 3 ones pad one pixel on each side (PyTorch's padding=1)."""
    pad = (kernel - 1) // 2
    return nnx.Conv(
        i,
        o,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        rngs=rngs,
    )


def _bn(c: int) -> BatchNorm2d:
    return BatchNorm2d(c, use_running_average=True)


class Bottleneck(nnx.Module):
    """1 x 1 conv -> 3 x 3 conv -> average pool of ``stride`` -> 1 x 1 conv to 4 x planes, each
    with BatchNorm (ReLU on the first two), plus the pooled shortcut (``downsample``: conv
    ``0``, BatchNorm ``1`` where the shape changes), then ReLU.
    (B, H, W, inplanes) -> (B, H // stride, W // stride, 4 planes)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, rngs: nnx.Rngs) -> None:
        self.stride = stride
        out = planes * EXPANSION
        self.conv1 = _conv(inplanes, planes, 1, rngs)
        self.bn1 = _bn(planes)
        self.relu1 = _ReLU()
        self.conv2 = _conv(planes, planes, 3, rngs)
        self.bn2 = _bn(planes)
        self.relu2 = _ReLU()
        self.avgpool = _AvgPool2d(stride)
        self.conv3 = _conv(planes, out, 1, rngs)
        self.bn3 = _bn(out)
        self.relu3 = _ReLU()
        self.downsample = (
            nnx.List([_conv(inplanes, out, 1, rngs), _bn(out)])
            if has_downsample(inplanes, planes, stride)
            else nnx.data(None)
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x
        if self.downsample is not None:
            s = self.stride
            if s > 1:  # OpenAI's downsample["-1"]
                identity = nnx.avg_pool(identity, (s, s), strides=(s, s), padding="VALID")
            identity = self.downsample[1](self.downsample[0](identity))
        return self.relu3(out + identity)


class AttentionPool2d(nnx.Module):
    """The mean token (prepended to the map's tokens, ``positional_embedding`` added to all)
    attends over them: ``q_proj`` / ``k_proj`` / ``v_proj``, ``num_heads`` heads, ``c_proj``.
    (B, H, W, embed_dim), H * W + 1 rows of ``positional_embedding`` -> (B, output_dim)."""

    def __init__(
        self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int, *, rngs: nnx.Rngs
    ) -> None:
        self.num_heads = num_heads
        normal = jax.nn.initializers.normal(embed_dim**-0.5)
        self.positional_embedding = nnx.Param(
            normal(rngs.params(), (spacial_dim**2 + 1, embed_dim))
        )
        self.k_proj = Linear(embed_dim, embed_dim, rngs=rngs)
        self.q_proj = Linear(embed_dim, embed_dim, rngs=rngs)
        self.v_proj = Linear(embed_dim, embed_dim, rngs=rngs)
        self.c_proj = Linear(embed_dim, output_dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)  # row-major, as torch's flatten
        x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
        x = x + self.positional_embedding[...].astype(x.dtype)
        n, heads = x.shape[1], self.num_heads
        q = self.q_proj(x[:, :1]).reshape(b, 1, heads, c // heads)
        k = self.k_proj(x).reshape(b, n, heads, c // heads)
        v = self.v_proj(x).reshape(b, n, heads, c // heads)
        out = dot_product_attention(q, k, v, None, (c // heads) ** -0.5)  # (B, 1, heads, hd)
        return self.c_proj(out.reshape(b, c))


@register_model("clip_resnet", "flax")
class ModifiedResNet(nnx.Module):
    """CLIP ResNet image encoder.

    Input: (B, H, W, in_chans) channels-last, normalized (``CLIP_MEAN`` / ``CLIP_STD``),
    reducing to the trained (img_size // 32) grid at ``attnpool``. Output: the image embedding
    (B, output_dim); with ``config.features``, a dict of those outputs in that order (maps
    (B, H, W, C), ``attnpool`` (B, output_dim)).
    """

    def __init__(self, config: ClipResNetConfig, *, rngs: nnx.Rngs) -> None:
        check_features(config)
        self.config = config
        half, w = config.width // 2, config.width
        self.conv1 = _conv(config.in_chans, half, 3, rngs, stride=2)
        self.bn1 = _bn(half)
        self.conv2 = _conv(half, half, 3, rngs)
        self.bn2 = _bn(half)
        self.conv3 = _conv(half, w, 3, rngs)
        self.bn3 = _bn(w)
        self.avgpool = _AvgPool2d(2)
        self.relu = _ReLU()
        for i, blocks in enumerate(stages(config), start=1):
            setattr(self, f"layer{i}", nnx.List([Bottleneck(*b, rngs=rngs) for b in blocks]))
        self.attnpool = AttentionPool2d(
            config.grid, config.embed_dim, config.heads, config.output_dim, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array | dict[str, jax.Array]:
        check_inputs(self, "flax", x)
        wanted = self.config.features
        out: dict[str, jax.Array] = {}

        def keep(name: str, value: jax.Array) -> bool:
            if name in wanted:
                out[name] = value
            return bool(wanted) and len(out) == len(wanted)

        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = self.relu(bn(conv(x)))
        x = self.avgpool(x)
        if keep("stem", x):
            return {n: out[n] for n in wanted}
        for i in range(1, 5):
            for j, block in enumerate(getattr(self, f"layer{i}")):
                x = block(x)
                if keep(f"layer{i}.{j}", x):
                    return {n: out[n] for n in wanted}
            if keep(f"layer{i}", x):
                return {n: out[n] for n in wanted}
        x = self.attnpool(x)
        keep("attnpool", x)
        return {n: out[n] for n in wanted} if wanted else x
