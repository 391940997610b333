"""CLIP's ViT image encoder, Flax NNX port of ``zoo.models.clip_vit``: same module tree and
attribute names (``transformer.resblocks.0.attn.in_proj_weight``,
``transformer.resblocks.0.mlp.c_fc.kernel``, ``proj``), channels-last.

``in_proj_weight`` / ``in_proj_bias`` are plain parameters in PyTorch's layout (3 width, width),
applied as ``x @ in_proj_weight.T + in_proj_bias``, and ``proj`` (width, output_dim) as
``x @ proj``: the reference's parameters, so they convert as they are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers.linear import Linear
from ports.flax.layers.norm import LayerNorm
from ports.flax.layers.window_attention import dot_product_attention
from zoo.families.clip_vit import ClipViTConfig
from zoo.family import check_features
from zoo.registry import register_model
from zoo.validate import check_inputs

#: the generic names (Mlp, Transformer, LayerNorm) stay unexported: exports are unique across
#: the families
__all__ = ["MultiheadAttention", "QuickGELU", "ResidualAttentionBlock", "VisionTransformer"]


class QuickGELU(nnx.Module):
    """``x * sigmoid(1.702 x)``: CLIP's activation (not GELU). Any shape."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * jax.nn.sigmoid(1.702 * x)


class MultiheadAttention(nnx.Module):
    """Self-attention with ``torch.nn.MultiheadAttention``'s parameters: ``in_proj_weight``
    (3 dim, dim), ``in_proj_bias`` (3 dim,): the q, k, v rows; ``out_proj`` Linear.
    (B, N, dim) -> (B, N, dim)."""

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs) -> None:
        self.heads = heads
        init = jax.nn.initializers.glorot_uniform()
        self.in_proj_weight = nnx.Param(init(rngs.params(), (3 * dim, dim)))
        self.in_proj_bias = nnx.Param(jnp.zeros((3 * dim,)))
        self.out_proj = Linear(dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, d = x.shape
        qkv = x @ self.in_proj_weight[...].T + self.in_proj_bias[...]
        qkv = qkv.reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B, N, heads, hd)
        out = dot_product_attention(q, k, v, None, (d // self.heads) ** -0.5)
        return self.out_proj(out.reshape(b, n, d))


class Mlp(nnx.Module):
    """c_fc -> QuickGELU (``gelu``) -> c_proj. (..., dim) -> same."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs) -> None:
        self.c_fc = Linear(dim, hidden, rngs=rngs)
        self.gelu = QuickGELU()
        self.c_proj = Linear(hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nnx.Module):
    """x + attn(ln_1(x)), then + mlp(ln_2(x)). (B, N, dim) -> same."""

    def __init__(self, dim: int, heads: int, hidden: int, *, rngs: nnx.Rngs) -> None:
        self.attn = MultiheadAttention(dim, heads, rngs=rngs)
        self.ln_1 = LayerNorm(dim, rngs=rngs)
        self.mlp = Mlp(dim, hidden, rngs=rngs)
        self.ln_2 = LayerNorm(dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nnx.Module):
    """``resblocks``: the residual blocks, applied in order by ``VisionTransformer``."""

    def __init__(self, width: int, layers: int, heads: int, hidden: int, *, rngs: nnx.Rngs):
        self.resblocks = nnx.List(
            [ResidualAttentionBlock(width, heads, hidden, rngs=rngs) for _ in range(layers)]
        )


@register_model("clip_vit", "flax")
class VisionTransformer(nnx.Module):
    """CLIP ViT image encoder.

    Input: (B, H, W, in_chans) channels-last, normalized (``CLIP_MEAN`` / ``CLIP_STD``), with
    (H // patch, W // patch) the trained grid. Output: the image embedding (B, output_dim);
    with ``config.features``, a dict of those outputs in that order (tokens (B, N, width),
    ``proj`` (B, output_dim)).
    """

    def __init__(self, config: ClipViTConfig, *, rngs: nnx.Rngs) -> None:
        check_features(config)
        self.config = config
        w, p = config.width, config.patch_size
        self.conv1 = nnx.Conv(
            config.in_chans, w, (p, p), strides=(p, p), padding="VALID", use_bias=False, rngs=rngs
        )
        normal = jax.nn.initializers.normal(w**-0.5)
        self.class_embedding = nnx.Param(normal(rngs.params(), (w,)))
        self.positional_embedding = nnx.Param(normal(rngs.params(), (config.tokens, w)))
        self.ln_pre = LayerNorm(w, rngs=rngs)
        hidden = int(w * config.mlp_ratio)
        self.transformer = Transformer(w, config.layers, config.heads, hidden, rngs=rngs)
        self.ln_post = LayerNorm(w, rngs=rngs)
        self.proj = nnx.Param(normal(rngs.params(), (w, config.output_dim)))

    def __call__(self, x: jax.Array) -> jax.Array | dict[str, jax.Array]:
        check_inputs(self, "flax", x)
        wanted = self.config.features
        out: dict[str, jax.Array] = {}

        def keep(name: str, value: jax.Array) -> bool:
            if name in wanted:
                out[name] = value
            return bool(wanted) and len(out) == len(wanted)

        x = self.conv1(x)
        b, w = x.shape[0], self.config.width
        x = x.reshape(b, -1, w)  # (B, grid^2, width), row-major as the reference's flatten
        cls = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype), (b, 1, w))
        x = jnp.concatenate([cls, x], axis=1) + self.positional_embedding[...].astype(x.dtype)
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
        x = x[:, 0] @ self.proj[...].astype(x.dtype)
        keep("proj", x)
        return {n: out[n] for n in wanted} if wanted else x
