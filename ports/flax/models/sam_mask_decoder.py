"""Segment Anything's mask decoder and its two-way transformer, Flax NNX port of
``zoo.models.sam_mask_decoder``: same tree and names (``transformer.layers.0.self_attn.q_proj``,
``output_upscaling.0.transpose_kernel``, ``iou_token.embedding``,
``output_hypernetworks_mlps.0.layers.2``), channels-last.

``SamAttention`` is the official two-way transformer's ``Attention``, named apart from
``ports.flax.layers.Attention`` (ViTDet's).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers.conv import ConvTranspose2d
from ports.flax.layers.linear import Linear
from ports.flax.layers.mlp import GELU, MLPBlock
from ports.flax.layers.norm import LayerNorm, LayerNorm2d
from ports.flax.layers.pool import ReLU
from ports.flax.layers.window_attention import dot_product_attention

__all__ = [
    "MLP",
    "MaskDecoder",
    "ReLU",
    "SamAttention",
    "TwoWayAttentionBlock",
    "TwoWayTransformer",
]


class SamAttention(nnx.Module):
    """Multi-head attention with separate projections to ``embedding_dim // downsample_rate``.

    __call__(q (B, Nq, C), k (B, Nk, C), v (B, Nk, C)) -> (B, Nq, C).
    """

    def __init__(
        self, embedding_dim: int, num_heads: int, downsample_rate: int = 1, *, rngs: nnx.Rngs
    ) -> None:
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide {self.internal_dim}")
        self.q_proj = Linear(embedding_dim, self.internal_dim, rngs=rngs)
        self.k_proj = Linear(embedding_dim, self.internal_dim, rngs=rngs)
        self.v_proj = Linear(embedding_dim, self.internal_dim, rngs=rngs)
        self.out_proj = Linear(self.internal_dim, embedding_dim, rngs=rngs)

    def _heads(self, x: jax.Array) -> jax.Array:
        """(B, N, D) -> (B, N, heads, D / heads)."""
        b, n, d = x.shape
        return x.reshape(b, n, self.num_heads, d // self.num_heads)

    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        q, k, v = (
            self._heads(self.q_proj(q)),
            self._heads(self.k_proj(k)),
            self._heads(self.v_proj(v)),
        )
        out = dot_product_attention(q, k, v, None, q.shape[-1] ** -0.5)
        b, n, _, _ = out.shape
        return self.out_proj(out.reshape(b, n, self.internal_dim))


class TwoWayAttentionBlock(nnx.Module):
    """Tokens self-attend, attend to the image, pass an MLP (ReLU); then the image attends to the
    tokens. Every step is residual and followed by its LayerNorm (``norm1`` ... ``norm4``).

    __call__(queries (B, Nq, C), keys (B, Nk, C), query_pe (B, Nq, C), key_pe (B, Nk, C)) ->
    (queries, keys), same shapes. ``skip_first_layer_pe`` (the first block) self-attends without
    positional encodings and without the residual.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        rate = attention_downsample_rate
        self.self_attn = SamAttention(embedding_dim, num_heads, rngs=rngs)
        self.norm1 = LayerNorm(embedding_dim, rngs=rngs)
        self.cross_attn_token_to_image = SamAttention(
            embedding_dim, num_heads, downsample_rate=rate, rngs=rngs
        )
        self.norm2 = LayerNorm(embedding_dim, rngs=rngs)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, act=ReLU, rngs=rngs)
        self.norm3 = LayerNorm(embedding_dim, rngs=rngs)
        self.norm4 = LayerNorm(embedding_dim, rngs=rngs)
        self.cross_attn_image_to_token = SamAttention(
            embedding_dim, num_heads, downsample_rate=rate, rngs=rngs
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def __call__(
        self, queries: jax.Array, keys: jax.Array, query_pe: jax.Array, key_pe: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nnx.Module):
    """``depth`` two-way blocks (``layers``), then a last token-to-image attention and
    ``norm_final_attn``.

    __call__(image_embedding (B, H, W, C), image_pe (B, H, W, C), point_embedding (B, N, C)) ->
    (queries (B, N, C), keys (B, H * W, C)). ``point_embedding`` is also the queries'
    positional encoding in every block.
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nnx.List(
            [
                TwoWayAttentionBlock(
                    embedding_dim,
                    num_heads,
                    mlp_dim=mlp_dim,
                    attention_downsample_rate=attention_downsample_rate,
                    skip_first_layer_pe=i == 0,
                    rngs=rngs,
                )
                for i in range(depth)
            ]
        )
        self.final_attn_token_to_image = SamAttention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate, rngs=rngs
        )
        self.norm_final_attn = LayerNorm(embedding_dim, rngs=rngs)

    def __call__(
        self, image_embedding: jax.Array, image_pe: jax.Array, point_embedding: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        b, h, w, c = image_embedding.shape
        keys = image_embedding.reshape(b, h * w, c)
        key_pe = image_pe.reshape(image_pe.shape[0], h * w, c)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


class MLP(nnx.Module):
    """``num_layers`` Linear layers (``layers``), ReLU between them, optional final sigmoid.
    (..., input_dim) -> (..., output_dim)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.num_layers = num_layers
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nnx.List(
            [Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )
        self.sigmoid_output = sigmoid_output

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = jax.nn.relu(x)
        return jax.nn.sigmoid(x) if self.sigmoid_output else x


class MaskDecoder(nnx.Module):
    """Predicts masks and their IoU scores (channels-last port of the reference
    ``MaskDecoder``; the two-way transformer is built here from the ``transformer_*``
    arguments).

    __call__(image_embeddings (1, H, W, C), image_pe (1, H, W, C), sparse_prompt_embeddings
    (B, N, C), dense_prompt_embeddings (B, H, W, C), multimask_output: bool) -> masks
    (B, 4H, 4W, M) channels-last (the reference's (B, M, 4H, 4W) with the mask axis last),
    iou_pred (B, M); M = num_multimask_outputs with ``multimask_output``, else 1. One image, B
    prompt sets: the image embedding and its encoding are repeated once per prompt set.
    """

    def __init__(
        self,
        transformer_dim: int,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        transformer_depth: int = 2,
        transformer_num_heads: int = 8,
        transformer_mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        dim = transformer_dim
        self.transformer_dim = dim
        self.transformer = TwoWayTransformer(
            transformer_depth,
            dim,
            transformer_num_heads,
            transformer_mlp_dim,
            attention_downsample_rate=attention_downsample_rate,
            rngs=rngs,
        )
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nnx.Embed(1, dim, rngs=rngs)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nnx.Embed(self.num_mask_tokens, dim, rngs=rngs)
        self.output_upscaling = nnx.List(
            [
                ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2, rngs=rngs),
                LayerNorm2d(dim // 4, rngs=rngs),
                GELU(),
                ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2, rngs=rngs),
                GELU(),
            ]
        )
        self.output_hypernetworks_mlps = nnx.List(
            [MLP(dim, dim, dim // 8, 3, rngs=rngs) for _ in range(self.num_mask_tokens)]
        )
        self.iou_prediction_head = MLP(
            dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, rngs=rngs
        )

    def __call__(
        self,
        image_embeddings: jax.Array,
        image_pe: jax.Array,
        sparse_prompt_embeddings: jax.Array,
        dense_prompt_embeddings: jax.Array,
        multimask_output: bool,
    ) -> tuple[jax.Array, jax.Array]:
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[..., keep], iou_pred[:, keep]

    def predict_masks(
        self,
        image_embeddings: jax.Array,
        image_pe: jax.Array,
        sparse_prompt_embeddings: jax.Array,
        dense_prompt_embeddings: jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        """All ``num_mask_tokens`` masks (B, 4H, 4W, M + 1) and IoU scores (B, M + 1)."""
        b, _, c = sparse_prompt_embeddings.shape
        output_tokens = jnp.concatenate(
            [self.iou_token.embedding[...], self.mask_tokens.embedding[...]], axis=0
        )
        output_tokens = jnp.broadcast_to(output_tokens[None], (b, *output_tokens.shape))
        tokens = jnp.concatenate([output_tokens, sparse_prompt_embeddings], axis=1)
        src = jnp.repeat(image_embeddings, b, axis=0) + dense_prompt_embeddings
        pos_src = jnp.repeat(image_pe, b, axis=0)
        n, h, w, _ = src.shape
        hs, keys = self.transformer(src, pos_src, tokens)
        upscaled = keys.reshape(n, h, w, c)
        for layer in self.output_upscaling:
            upscaled = layer(upscaled)
        hyper_in = jnp.stack(
            [mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=1
        )
        masks = jnp.einsum("bhwc,bmc->bhwm", upscaled, hyper_in)
        return masks, self.iou_prediction_head(hs[:, 0])
