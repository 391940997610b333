"""Segment Anything's mask decoder and its two-way transformer.

Attribute names are the official checkpoint's (``mask_decoder.transformer.layers.0.self_attn.
q_proj``, ``transformer.final_attn_token_to_image``, ``iou_token``, ``mask_tokens``,
``output_upscaling.{0,1,3}``, ``output_hypernetworks_mlps.0.layers.2``,
``iou_prediction_head.layers.0``). ``SamAttention`` is the official ``Attention`` of the two-way
transformer (separate q / k / v / out projections into ``embedding_dim // downsample_rate``
channels), named apart from ``zoo.layers.Attention`` (ViTDet's).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.conv import ConvTranspose2d
from zoo.layers.mlp import MLPBlock
from zoo.layers.norm import LayerNorm, LayerNorm2d

__all__ = ["MLP", "MaskDecoder", "SamAttention", "TwoWayAttentionBlock", "TwoWayTransformer"]


class SamAttention(nn.Module):
    """Multi-head attention with separate projections to ``embedding_dim // downsample_rate``.

    forward(q (B, Nq, C), k (B, Nk, C), v (B, Nk, C)) -> (B, Nq, C).
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, heads, N, D / heads)."""
        b, n, d = x.shape
        return x.reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (
            self._heads(self.q_proj(q)),
            self._heads(self.k_proj(k)),
            self._heads(self.v_proj(v)),
        )
        # segment-anything's operations in its order (not a fused kernel): bit for bit equal
        attn = torch.softmax((q @ k.permute(0, 1, 3, 2)) / math.sqrt(q.shape[-1]), dim=-1)
        out = attn @ v
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.internal_dim))


class TwoWayAttentionBlock(nn.Module):
    """Tokens self-attend, attend to the image, pass an MLP; then the image attends to the tokens.
    Every step is residual and followed by its LayerNorm (``norm1`` ... ``norm4``).

    forward(queries (B, Nq, C), keys (B, Nk, C), query_pe (B, Nq, C), key_pe (B, Nk, C)) ->
    (queries, keys), same shapes. The positional encodings are added to queries and keys before
    each attention; ``skip_first_layer_pe`` (the first block) self-attends without them and
    without the residual.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = SamAttention(embedding_dim, num_heads)
        self.norm1 = LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = SamAttention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, act=nn.ReLU)
        self.norm3 = LayerNorm(embedding_dim)
        self.norm4 = LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = SamAttention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
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


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks, then a last token-to-image attention and ``norm_final_attn``.

    forward(image_embedding (B, C, H, W), image_pe (B, C, H, W), point_embedding (B, N, C)) ->
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
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim=mlp_dim,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=i == 0,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = SamAttention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


class MLP(nn.Module):
    """``num_layers`` Linear layers (``layers.i``), ReLU between them, optional final sigmoid.
    (..., input_dim) -> (..., output_dim)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class MaskDecoder(nn.Module):
    """Predicts masks and their IoU scores from an image embedding and prompt embeddings.

    The two-way transformer is built here from the ``transformer_*`` arguments (official SAM:
    depth 2, 8 heads, MLP 2048, attention downsample 2).

    forward(image_embeddings (1, C, H, W), image_pe (1, C, H, W), sparse_prompt_embeddings
    (B, N, C), dense_prompt_embeddings (B, C, H, W), multimask_output: bool) -> masks
    (B, M, 4H, 4W) channels-first, iou_pred (B, M); M = num_multimask_outputs with
    ``multimask_output``, else 1. One image, B prompt sets: the image embedding and its encoding
    are repeated once per prompt set (``repeat_interleave``, as the official decoder does).
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
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = TwoWayTransformer(
            transformer_depth,
            transformer_dim,
            transformer_num_heads,
            transformer_mlp_dim,
            attention_downsample_rate=attention_downsample_rate,
        )
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou_pred[:, keep]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks (B, M + 1, 4H, 4W) and IoU scores (B, M + 1)."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        src = torch.repeat_interleave(image_embeddings, b, dim=0) + dense_prompt_embeddings
        pos_src = torch.repeat_interleave(image_pe, b, dim=0)
        n, c, h, w = src.shape
        hs, keys = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]
        upscaled = self.output_upscaling(keys.transpose(1, 2).reshape(n, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        masks = torch.einsum("bmc,bchw->bmhw", hyper_in, upscaled)
        return masks, self.iou_prediction_head(iou_token_out)
