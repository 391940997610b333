"""Segment Anything's prompt encoder: points, boxes and low-resolution masks -> prompt embeddings.

Attribute names are the official checkpoint's (``prompt_encoder.pe_layer.
positional_encoding_gaussian_matrix``, ``point_embeddings.0.weight``, ``not_a_point_embed``,
``mask_downscaling.{0,1,3,4,6}``, ``no_mask_embed``). Point and box coordinates are pixels of the
padded model input (``input_image_size``), (x, y) order. Point labels: 1 foreground, 0 background,
-1 padding (embedded as ``not_a_point_embed`` with no positional part); other labels get the
positional encoding alone, as in the official code. Nothing branches on tensor values.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.layers.norm import LayerNorm2d
from zoo.tensor_format import Format

__all__ = ["PositionEmbeddingRandom", "PromptEncoder"]


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of 2D positions: (x, y) in [0, 1]^2 -> (sin, cos) of
    2 pi (2 (x, y) - 1) G, G = ``positional_encoding_gaussian_matrix`` (2, num_pos_feats), a
    persistent buffer. Output channels: 2 * num_pos_feats (sines first)."""

    output_format = Format.CHANNELS_FIRST_UNBATCHED  # forward: (C, H, W), no batch axis

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    @property
    def coords_dtype(self) -> torch.dtype:
        """Coordinates are float32 (as segment-anything keeps them, whatever the model's
        dtype), float64 in a float64 model."""
        is64 = self.positional_encoding_gaussian_matrix.dtype == torch.float64
        return torch.float64 if is64 else torch.float32

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) normalized (x, y) -> (..., 2 * num_pos_feats)."""
        proj = 2 * math.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an (H, W) grid of cells: (C, H, W), channels-first."""
        h, w = size
        device, dtype = self.positional_encoding_gaussian_matrix.device, self.coords_dtype
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        grid = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), dim=-1)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """(B, N, 2) pixel (x, y) in an image of ``image_size`` (H, W) -> (B, N, C)."""
        h, w = image_size
        # float64 points (the official automatic mask generator's) are divided in float64
        # before the cast, as segment-anything does
        dtype = torch.promote_types(coords_input.dtype, self.coords_dtype)
        scale = torch.tensor([w, h], dtype=dtype, device=coords_input.device)
        return self._pe_encoding((coords_input.to(dtype) / scale).to(self.coords_dtype))


class PromptEncoder(nn.Module):
    """Embeds SAM prompts.

    forward(points, boxes, masks), each optional:
      points: (coords (B, N, 2) pixel (x, y), labels (B, N)); without boxes one padding point
        (label -1) is appended.
      boxes: (B, 4) pixel (x0, y0, x1, y1), embedded as two corner tokens.
      masks: (B, 1, 4 He, 4 We) low-resolution mask logits, channels-first.
    Returns sparse (B, N', embed_dim) (points, then box corners; N' = 0 without either) and dense
    (B, embed_dim, He, We) channels-first (``no_mask_embed`` everywhere without masks), where
    (He, We) = ``image_embedding_size``. B is taken from the first prompt given (1 with none).
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4  # negative point, positive point, box corner 0, corner 1
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = tuple(4 * s for s in self.image_embedding_size)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid: (1, embed_dim, He, We)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(B, N, 2), (B, N) -> (B, N + pad, embed_dim)."""
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, torch.zeros_like(points[:, :1])], dim=1)
            labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        embedding = torch.where(labels == -1, self.not_a_point_embed.weight, embedding)
        embedding = torch.where(labels == 0, embedding + self.point_embeddings[0].weight, embedding)
        return torch.where(labels == 1, embedding + self.point_embeddings[1].weight, embedding)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) -> (B, 2, embed_dim)."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embed = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return embedding + corner_embed

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        given = [
            p for p in (points[0] if points is not None else None, boxes, masks) if p is not None
        ]
        bs = given[0].shape[0] if given else 1
        device = self.no_mask_embed.weight.device
        sparse = [torch.empty((bs, 0, self.embed_dim), device=device)]
        if points is not None:
            sparse.append(self._embed_points(*points, pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                bs, -1, *self.image_embedding_size
            )
        return torch.cat(sparse, dim=1), dense
