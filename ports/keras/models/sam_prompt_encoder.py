"""Segment Anything's prompt encoder, Keras 3 port of ``zoo.models.sam_prompt_encoder``: same
tree and names (``root/pe_layer/positional_encoding_gaussian_matrix``,
``root/point_embeddings-0/embedding``, ``root/mask_downscaling-3/kernel``), channels-last,
``keras.ops`` only.

Point and box coordinates are pixels of the padded model input (``input_image_size``), (x, y).
Point labels: 1 foreground, 0 background, -1 padding (``not_a_point_embed``, no positional
part); other labels get the positional encoding alone. Nothing branches on tensor values.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops
from keras.backend import standardize_dtype

from ports.keras.layers.mlp import GELU
from ports.keras.layers.norm import LayerNorm2d
from ports.keras.layers.window import Tensor
from zoo.windows import grid_centres

__all__ = ["Embedding", "PositionEmbeddingRandom", "PromptEncoder"]


class Embedding(keras.layers.Layer):
    """A learned table (num_embeddings, embedding_dim) in the variable ``embedding`` (torch
    ``nn.Embedding.weight``). SAM only reads whole tables, so the layer is never called."""

    def __init__(self, num_embeddings: int, embedding_dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim

    def build(self, input_shape: tuple | None = None) -> None:
        self.embedding = self.add_weight(
            name="embedding",
            shape=(self.num_embeddings, self.embedding_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
        )

    @property
    def weight(self) -> Tensor:
        """The table as a tensor, like torch's ``nn.Embedding.weight``."""
        return ops.convert_to_tensor(self.embedding)


class PositionEmbeddingRandom(keras.layers.Layer):
    """Random Fourier features of 2D positions: (x, y) in [0, 1]^2 -> (sin, cos) of
    2 pi (2 (x, y) - 1) G, G = ``positional_encoding_gaussian_matrix`` (2, num_pos_feats), a
    non-trainable variable. Output channels: 2 * num_pos_feats (sines first).

    call(size=(H, W)) -> (H, W, C): the encoding of the grid cell centres (Keras takes only
    tensors positionally, so ``size`` goes by keyword).
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_pos_feats = num_pos_feats
        self.scale = 1.0 if scale is None or scale <= 0.0 else scale

    def build(self, input_shape: tuple | None = None) -> None:
        self.positional_encoding_gaussian_matrix = self.add_weight(
            name="positional_encoding_gaussian_matrix",
            shape=(2, self.num_pos_feats),
            initializer=keras.initializers.RandomNormal(stddev=self.scale),
            trainable=False,
        )

    def _pe_encoding(self, coords: Tensor) -> Tensor:
        """(..., 2) normalized (x, y) -> (..., 2 * num_pos_feats)."""
        matrix = ops.cast(self.positional_encoding_gaussian_matrix, coords.dtype)
        proj = 2 * math.pi * ops.matmul(2 * coords - 1, matrix)
        return ops.concatenate([ops.sin(proj), ops.cos(proj)], axis=-1)

    @property
    def coords_dtype(self) -> str:
        """Coordinates are float32 (as the reference keeps them, whatever the policy), float64
        in a float64 model."""
        is64 = standardize_dtype(self.positional_encoding_gaussian_matrix.dtype) == "float64"
        return "float64" if is64 else "float32"

    def call(self, size: tuple[int, int]) -> Tensor:
        return self._pe_encoding(ops.convert_to_tensor(grid_centres(size, self.coords_dtype)))

    def forward_with_coords(self, coords: Tensor, image_size: tuple[int, int]) -> Tensor:
        """(B, N, 2) pixel (x, y) in an image of ``image_size`` (H, W) -> (B, N, C)."""
        h, w = image_size
        scale = ops.convert_to_tensor(np.array([w, h], dtype=self.coords_dtype))
        return self._pe_encoding(ops.cast(coords, self.coords_dtype) / scale)


def _at_least_float32(policy) -> str:
    """The global dtype policy's name, or "float32" under a mixed-precision policy (float32
    variables, 16-bit compute). A model whose weights are bfloat16 (a bfloat16 policy, e.g.
    built for a bfloat16 checkpoint) keeps them so: its file round-trips bit for bit."""
    if policy.compute_dtype != policy.variable_dtype:
        return "float32"
    return policy.name


class PromptEncoder(keras.layers.Layer):
    """Embeds SAM prompts (channels-last port of the reference ``PromptEncoder``).

    call(points, boxes, masks), each optional (None):
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
        **kwargs,
    ) -> None:
        # float32 under a mixed-precision policy (Keras' way for layers that need the
        # precision): pixel coordinates in bfloat16 (8-bit mantissa) round to multiples of 4
        # above 512, and the Fourier features take sin / cos of their products; a negligible
        # cost. Any other policy (float32, float64, a bfloat16 model's) is kept as it is.
        kwargs.setdefault("dtype", _at_least_float32(keras.config.dtype_policy()))
        super().__init__(**kwargs)
        sub = {"dtype": self.dtype_policy}  # the sublayers too (they would take the global one)
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.mask_in_chans = mask_in_chans
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2, name="pe_layer", **sub)
        self.num_point_embeddings = 4  # negative point, positive point, box corner 0, corner 1
        self.point_embeddings = [
            Embedding(1, embed_dim, name=f"point_embeddings-{i}", **sub)
            for i in range(self.num_point_embeddings)
        ]
        self.not_a_point_embed = Embedding(1, embed_dim, name="not_a_point_embed", **sub)
        self.mask_input_size = tuple(4 * s for s in self.image_embedding_size)
        quarter = mask_in_chans // 4
        self.mask_downscaling = [
            keras.layers.Conv2D(quarter, 2, strides=2, name="mask_downscaling-0", **sub),
            LayerNorm2d(quarter, name="mask_downscaling-1", **sub),
            GELU(name="mask_downscaling-2", **sub),
            keras.layers.Conv2D(mask_in_chans, 2, strides=2, name="mask_downscaling-3", **sub),
            LayerNorm2d(mask_in_chans, name="mask_downscaling-4", **sub),
            GELU(name="mask_downscaling-5", **sub),
            keras.layers.Conv2D(embed_dim, 1, name="mask_downscaling-6", **sub),
        ]
        self.no_mask_embed = Embedding(1, embed_dim, name="no_mask_embed", **sub)

    def build(self, input_shape: tuple | None = None) -> None:
        """Create every variable; none depends on the input shapes."""
        self.pe_layer.build()
        for table in [*self.point_embeddings, self.not_a_point_embed, self.no_mask_embed]:
            table.build()
        quarter, full = self.mask_in_chans // 4, self.mask_in_chans
        in_channels = [1, quarter, quarter, quarter, full, full, full]
        for layer, c in zip(self.mask_downscaling, in_channels, strict=True):
            layer.build((None, None, None, c))

    def get_dense_pe(self) -> Tensor:
        """Positional encoding of the image-embedding grid: (1, He, We, embed_dim)."""
        return ops.expand_dims(self.pe_layer(size=self.image_embedding_size), 0)

    def _embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """(B, N, 2), (B, N) -> (B, N + pad, embed_dim)."""
        points = ops.cast(points, self.pe_layer.coords_dtype) + 0.5  # pixel centres
        if pad:
            points = ops.concatenate([points, ops.zeros_like(points[:, :1])], axis=1)
            labels = ops.concatenate([labels, -ops.ones_like(labels[:, :1])], axis=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        embedding = ops.where(ops.equal(labels, -1), self.not_a_point_embed.weight, embedding)
        embedding = ops.where(
            ops.equal(labels, 0), embedding + self.point_embeddings[0].weight, embedding
        )
        return ops.where(
            ops.equal(labels, 1), embedding + self.point_embeddings[1].weight, embedding
        )

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        """(B, 4) -> (B, 2, embed_dim)."""
        corners = ops.reshape(ops.cast(boxes, self.pe_layer.coords_dtype) + 0.5, (-1, 2, 2))
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embed = ops.concatenate(
            [self.point_embeddings[2].weight, self.point_embeddings[3].weight], axis=0
        )
        return embedding + corner_embed

    def call(
        self,
        points: tuple[Tensor, Tensor] | None,
        boxes: Tensor | None,
        masks: Tensor | None,
        training: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        given = [
            p for p in (points[0] if points is not None else None, boxes, masks) if p is not None
        ]
        bs = given[0].shape[0] if given else 1
        sparse = []
        if points is not None:
            sparse.append(self._embed_points(*points, pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse = ops.concatenate(sparse, axis=1) if sparse else ops.zeros((bs, 0, self.embed_dim))
        if masks is not None:
            dense = masks
            for layer in self.mask_downscaling:
                dense = layer(dense)
        else:
            dense = ops.broadcast_to(
                ops.reshape(self.no_mask_embed.weight, (1, 1, 1, -1)),
                (bs, *self.image_embedding_size, self.embed_dim),
            )
        return sparse, dense
