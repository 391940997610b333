"""Segment Anything's prompt encoder, Flax NNX port of ``zoo.models.sam_prompt_encoder``: same
tree and names (``pe_layer.positional_encoding_gaussian_matrix`` (a ``Buffer``),
``point_embeddings.0.embedding``, ``mask_downscaling.3.kernel``), channels-last.

Point and box coordinates are pixels of the padded model input (``input_image_size``), (x, y).
Point labels: 1 foreground, 0 background, -1 padding (``not_a_point_embed``, no positional
part); other labels get the positional encoding alone. Nothing branches on tensor values.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ports.flax.layers.mlp import GELU
from ports.flax.layers.norm import LayerNorm2d
from ports.flax.layers.variables import Buffer
from zoo.windows import grid_centres

__all__ = ["PositionEmbeddingRandom", "PromptEncoder"]


class PositionEmbeddingRandom(nnx.Module):
    """Random Fourier features of 2D positions: (x, y) in [0, 1]^2 -> (sin, cos) of
    2 pi (2 (x, y) - 1) G, G = ``positional_encoding_gaussian_matrix`` (2, num_pos_feats), a
    ``Buffer``. Output channels: 2 * num_pos_feats (sines first).

    __call__(size (H, W)) -> (H, W, C): the encoding of the grid cell centres.
    """

    def __init__(
        self, num_pos_feats: int = 64, scale: float | None = None, *, rngs: nnx.Rngs
    ) -> None:
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.positional_encoding_gaussian_matrix = Buffer(
            scale * jax.random.normal(rngs.params(), (2, num_pos_feats))
        )

    def _pe_encoding(self, coords: jax.Array) -> jax.Array:
        """(..., 2) normalized (x, y) -> (..., 2 * num_pos_feats)."""
        proj = 2 * math.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix[...])
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)

    @property
    def coords_dtype(self) -> jnp.dtype:
        """Coordinates are float32 (as the reference keeps them, whatever the parameters'
        dtype), float64 in a float64 model."""
        is64 = self.positional_encoding_gaussian_matrix[...].dtype == jnp.float64
        return jnp.dtype(jnp.float64 if is64 else jnp.float32)

    def __call__(self, size: tuple[int, int]) -> jax.Array:
        return self._pe_encoding(jnp.asarray(grid_centres(size, self.coords_dtype)))

    def forward_with_coords(self, coords: jax.Array, image_size: tuple[int, int]) -> jax.Array:
        """(B, N, 2) pixel (x, y) in an image of ``image_size`` (H, W) -> (B, N, C)."""
        h, w = image_size
        scale = jnp.asarray(np.array([w, h], dtype=self.coords_dtype))
        return self._pe_encoding(coords.astype(self.coords_dtype) / scale)


class PromptEncoder(nnx.Module):
    """Embeds SAM prompts (channels-last port of the reference ``PromptEncoder``).

    __call__(points, boxes, masks), each optional (None):
      points: (coords (B, N, 2) pixel (x, y), labels (B, N)); without boxes one padding point
        (label -1) is appended.
      boxes: (B, 4) pixel (x0, y0, x1, y1), embedded as two corner tokens.
      masks: (B, 4 He, 4 We, 1) low-resolution mask logits, channels-last.
    Returns sparse (B, N', embed_dim) (points, then box corners; N' = 0 without either) and dense
    (B, He, We, embed_dim) channels-last, where (He, We) = ``image_embedding_size``.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2, rngs=rngs)
        self.num_point_embeddings = 4  # negative point, positive point, box corner 0, corner 1
        self.point_embeddings = nnx.List(
            [nnx.Embed(1, embed_dim, rngs=rngs) for _ in range(self.num_point_embeddings)]
        )
        self.not_a_point_embed = nnx.Embed(1, embed_dim, rngs=rngs)
        self.mask_input_size = tuple(4 * s for s in self.image_embedding_size)
        quarter = mask_in_chans // 4

        def conv(cin: int, cout: int, k: int) -> nnx.Conv:
            return nnx.Conv(cin, cout, (k, k), strides=(k, k), padding="VALID", rngs=rngs)

        self.mask_downscaling = nnx.List(
            [
                conv(1, quarter, 2),
                LayerNorm2d(quarter, rngs=rngs),
                GELU(),
                conv(quarter, mask_in_chans, 2),
                LayerNorm2d(mask_in_chans, rngs=rngs),
                GELU(),
                conv(mask_in_chans, embed_dim, 1),
            ]
        )
        self.no_mask_embed = nnx.Embed(1, embed_dim, rngs=rngs)

    def get_dense_pe(self) -> jax.Array:
        """Positional encoding of the image-embedding grid: (1, He, We, embed_dim)."""
        return self.pe_layer(self.image_embedding_size)[None]

    def _embed_points(self, points: jax.Array, labels: jax.Array, pad: bool) -> jax.Array:
        """(B, N, 2), (B, N) -> (B, N + pad, embed_dim)."""
        points = points.astype(self.pe_layer.coords_dtype) + 0.5  # pixel centres
        if pad:
            points = jnp.concatenate([points, jnp.zeros_like(points[:, :1])], axis=1)
            labels = jnp.concatenate([labels, -jnp.ones_like(labels[:, :1])], axis=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        tables = self.point_embeddings
        embedding = jnp.where(labels == -1, self.not_a_point_embed.embedding[...], embedding)
        embedding = jnp.where(labels == 0, embedding + tables[0].embedding[...], embedding)
        return jnp.where(labels == 1, embedding + tables[1].embedding[...], embedding)

    def _embed_boxes(self, boxes: jax.Array) -> jax.Array:
        """(B, 4) -> (B, 2, embed_dim)."""
        corners = (boxes.astype(self.pe_layer.coords_dtype) + 0.5).reshape(-1, 2, 2)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        tables = self.point_embeddings
        return embedding + jnp.concatenate(
            [tables[2].embedding[...], tables[3].embedding[...]], axis=0
        )

    def __call__(
        self,
        points: tuple[jax.Array, jax.Array] | None,
        boxes: jax.Array | None,
        masks: jax.Array | None,
    ) -> tuple[jax.Array, jax.Array]:
        given = [
            p for p in (points[0] if points is not None else None, boxes, masks) if p is not None
        ]
        bs = given[0].shape[0] if given else 1
        sparse = [jnp.zeros((bs, 0, self.embed_dim))]
        if points is not None:
            sparse.append(self._embed_points(*points, pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        if masks is not None:
            dense = masks
            for layer in self.mask_downscaling:
                dense = layer(dense)
        else:
            dense = jnp.broadcast_to(
                self.no_mask_embed.embedding[...].reshape(1, 1, 1, -1),
                (bs, *self.image_embedding_size, self.embed_dim),
            )
        return jnp.concatenate(sparse, axis=1), dense
