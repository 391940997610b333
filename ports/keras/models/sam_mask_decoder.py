"""Segment Anything's mask decoder and its two-way transformer, Keras 3 port of
``zoo.models.sam_mask_decoder``: same tree and names (``root/transformer/layers-0/self_attn/
q_proj/kernel``, ``root/output_upscaling-0/transpose_kernel``, ``root/iou_token/embedding``,
``root/output_hypernetworks_mlps-0/layers-2/kernel``), channels-last, ``keras.ops`` only.

``SamAttention`` is the official two-way transformer's ``Attention``, named apart from
``ports.keras.layers.Attention`` (ViTDet's).
"""

from __future__ import annotations

import keras
from keras import ops

from ports.keras.layers.conv import ConvTranspose2d
from ports.keras.layers.dense import Dense
from ports.keras.layers.mlp import GELU, MLPBlock
from ports.keras.layers.norm import LayerNorm, LayerNorm2d
from ports.keras.layers.window import Tensor
from ports.keras.layers.window_attention import dot_product_attention
from ports.keras.models.sam_prompt_encoder import Embedding

__all__ = ["MLP", "MaskDecoder", "SamAttention", "TwoWayAttentionBlock", "TwoWayTransformer"]


class SamAttention(keras.layers.Layer):
    """Multi-head attention with separate projections to ``embedding_dim // downsample_rate``.

    call(q (B, Nq, C), k (B, Nk, C), v (B, Nk, C)) -> (B, Nq, C).
    """

    def __init__(
        self, embedding_dim: int, num_heads: int, downsample_rate: int = 1, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide {self.internal_dim}")
        self.q_proj = Dense(self.internal_dim, name="q_proj")
        self.k_proj = Dense(self.internal_dim, name="k_proj")
        self.v_proj = Dense(self.internal_dim, name="v_proj")
        self.out_proj = Dense(embedding_dim, name="out_proj")

    def build(self, input_shape: tuple | None = None) -> None:
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            proj.build((None, None, self.embedding_dim))
        self.out_proj.build((None, None, self.internal_dim))

    def _heads(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, heads, D / heads)."""
        return ops.reshape(x, (-1, x.shape[1], self.num_heads, self.internal_dim // self.num_heads))

    def call(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q, k, v = (
            self._heads(self.q_proj(q)),
            self._heads(self.k_proj(k)),
            self._heads(self.v_proj(v)),
        )
        out = dot_product_attention(q, k, v, None, q.shape[-1] ** -0.5)
        return self.out_proj(ops.reshape(out, (-1, out.shape[1], self.internal_dim)))


class TwoWayAttentionBlock(keras.layers.Layer):
    """Tokens self-attend, attend to the image, pass an MLP (ReLU); then the image attends to the
    tokens. Every step is residual and followed by its LayerNorm (``norm1`` ... ``norm4``).

    call(queries (B, Nq, C), keys (B, Nk, C), query_pe (B, Nq, C), key_pe (B, Nk, C)) ->
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
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim
        rate = attention_downsample_rate
        self.self_attn = SamAttention(embedding_dim, num_heads, name="self_attn")
        self.norm1 = LayerNorm(embedding_dim, name="norm1")
        self.cross_attn_token_to_image = SamAttention(
            embedding_dim, num_heads, downsample_rate=rate, name="cross_attn_token_to_image"
        )
        self.norm2 = LayerNorm(embedding_dim, name="norm2")
        self.mlp = MLPBlock(embedding_dim, mlp_dim, act=keras.layers.ReLU, name="mlp")
        self.norm3 = LayerNorm(embedding_dim, name="norm3")
        self.norm4 = LayerNorm(embedding_dim, name="norm4")
        self.cross_attn_image_to_token = SamAttention(
            embedding_dim, num_heads, downsample_rate=rate, name="cross_attn_image_to_token"
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def build(self, input_shape: tuple | None = None) -> None:
        tokens = (None, None, self.embedding_dim)
        for layer in (
            self.self_attn,
            self.norm1,
            self.cross_attn_token_to_image,
            self.norm2,
            self.mlp,
            self.norm3,
            self.norm4,
            self.cross_attn_image_to_token,
        ):
            layer.build(tokens)

    def call(
        self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
    ) -> tuple[Tensor, Tensor]:
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


class TwoWayTransformer(keras.layers.Layer):
    """``depth`` two-way blocks (``layers-i``), then a last token-to-image attention and
    ``norm_final_attn``.

    call(image_embedding (B, H, W, C), image_pe (B, H, W, C), point_embedding (B, N, C)) ->
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
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = [
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim=mlp_dim,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=i == 0,
                name=f"layers-{i}",
            )
            for i in range(depth)
        ]
        self.final_attn_token_to_image = SamAttention(
            embedding_dim,
            num_heads,
            downsample_rate=attention_downsample_rate,
            name="final_attn_token_to_image",
        )
        self.norm_final_attn = LayerNorm(embedding_dim, name="norm_final_attn")

    def build(self, input_shape: tuple | None = None) -> None:
        tokens = (None, None, self.embedding_dim)
        for layer in [*self.layers, self.final_attn_token_to_image, self.norm_final_attn]:
            layer.build(tokens)

    def call(
        self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor
    ) -> tuple[Tensor, Tensor]:
        _, h, w, c = image_embedding.shape
        keys = ops.reshape(image_embedding, (-1, h * w, c))
        key_pe = ops.reshape(image_pe, (-1, h * w, c))
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


class MLP(keras.layers.Layer):
    """``num_layers`` Dense layers (``layers-i``), ReLU between them, optional final sigmoid.
    (..., input_dim) -> (..., output_dim)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = [Dense(d, name=f"layers-{i}") for i, d in enumerate(self.dims[1:])]
        self.sigmoid_output = sigmoid_output

    def build(self, input_shape: tuple | None = None) -> None:
        for layer, d in zip(self.layers, self.dims[:-1], strict=True):
            layer.build((None, d))

    def call(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = ops.relu(x)
        return ops.sigmoid(x) if self.sigmoid_output else x


class MaskDecoder(keras.layers.Layer):
    """Predicts masks and their IoU scores (channels-last port of the reference
    ``MaskDecoder``; the two-way transformer is built here from the ``transformer_*``
    arguments).

    call(image_embeddings (1, H, W, C), image_pe (1, H, W, C), sparse_prompt_embeddings
    (B, N, C), dense_prompt_embeddings (B, H, W, C), multimask_output: bool) -> masks
    (B, 4H, 4W, M) channels-last (the reference's (B, M, 4H, 4W) with the mask axis last),
    iou_pred (B, M); M = num_multimask_outputs with ``multimask_output``, else 1. One image, B
    prompt sets: the image embedding and its encoding are repeated once per prompt set.
    Keras takes only tensors positionally: pass ``multimask_output=`` by keyword.
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
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        dim = transformer_dim
        self.transformer_dim = dim
        self.transformer = TwoWayTransformer(
            transformer_depth,
            dim,
            transformer_num_heads,
            transformer_mlp_dim,
            attention_downsample_rate=attention_downsample_rate,
            name="transformer",
        )
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = Embedding(1, dim, name="iou_token")
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = Embedding(self.num_mask_tokens, dim, name="mask_tokens")
        self.output_upscaling = [
            ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2, name="output_upscaling-0"),
            LayerNorm2d(dim // 4, name="output_upscaling-1"),
            GELU(name="output_upscaling-2"),
            ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2, name="output_upscaling-3"),
            GELU(name="output_upscaling-4"),
        ]
        self.output_hypernetworks_mlps = [
            MLP(dim, dim, dim // 8, 3, name=f"output_hypernetworks_mlps-{i}")
            for i in range(self.num_mask_tokens)
        ]
        self.iou_prediction_head = MLP(
            dim,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            name="iou_prediction_head",
        )

    def build(self, input_shape: tuple | None = None) -> None:
        """Create every variable; none depends on the input shapes."""
        dim = self.transformer_dim
        self.transformer.build()
        self.iou_token.build()
        self.mask_tokens.build()
        in_channels = [dim, dim // 4, dim // 4, dim // 4, dim // 8]
        for layer, c in zip(self.output_upscaling, in_channels, strict=True):
            layer.build((None, None, None, c))
        for mlp in [*self.output_hypernetworks_mlps, self.iou_prediction_head]:
            mlp.build()

    def call(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        training: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        if multimask_output:
            return masks[..., 1:], iou_pred[:, 1:]
        return masks[..., :1], iou_pred[:, :1]

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """All ``num_mask_tokens`` masks (B, 4H, 4W, M + 1) and IoU scores (B, M + 1)."""
        # the batch may be unknown while tracing (``model.fit`` on TensorFlow): a tensor then
        b, c = ops.shape(sparse_prompt_embeddings)[0], sparse_prompt_embeddings.shape[-1]
        output_tokens = ops.concatenate([self.iou_token.weight, self.mask_tokens.weight], axis=0)
        output_tokens = ops.broadcast_to(output_tokens[None], (b, self.num_mask_tokens + 1, c))
        tokens = ops.concatenate([output_tokens, sparse_prompt_embeddings], axis=1)
        src = ops.repeat(image_embeddings, b, axis=0) + dense_prompt_embeddings
        pos_src = ops.repeat(image_pe, b, axis=0)
        _, h, w, _ = src.shape
        hs, keys = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0]
        upscaled = ops.reshape(keys, (-1, h, w, c))
        for layer in self.output_upscaling:
            upscaled = layer(upscaled)
        hyper_in = ops.stack(
            [mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=1
        )
        masks = ops.einsum("bhwc,bmc->bhwm", upscaled, hyper_in)
        return masks, self.iou_prediction_head(iou_token_out)
