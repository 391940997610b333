"""Segment Anything: the image encoder, prompt encoder and mask decoder under the official
checkpoint's names (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``).

Pre- and post-processing (resizing the photo, normalization, padding, coordinates, mask
upsampling matrices) live in the framework-free ``zoo.sam_transforms``; ``zoo.predictor`` wraps
this model as ``segment-anything``'s ``SamPredictor``.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.families.sam import SamConfig, mask_decoder_arguments, prompt_encoder_arguments
from zoo.models.sam_image_encoder import ImageEncoderViT
from zoo.models.sam_mask_decoder import MaskDecoder
from zoo.models.sam_prompt_encoder import PromptEncoder
from zoo.registry import register_model
from zoo.tensor_format import Format
from zoo.validate import check_inputs

__all__ = ["Sam", "build_prompt_encoder", "build_mask_decoder"]


def build_prompt_encoder(config: SamConfig) -> PromptEncoder:
    return PromptEncoder(**prompt_encoder_arguments(config))


def build_mask_decoder(config: SamConfig) -> MaskDecoder:
    return MaskDecoder(**mask_decoder_arguments(config))


@register_model("sam", "torch")
class Sam(nn.Module):
    """SAM with point prompts in one call (what ``--verify`` and the parity tests run); the
    predictor calls the three parts itself for boxes, masks and reused embeddings.

    forward(images (B, in_chans, S, S) normalized and padded, point_coords (B, N, 2) as (x, y)
    pixels of that S x S input, point_labels (B, N): 1 foreground, 0 background, -1 padding)
    -> low-res mask logits (B, M, 4g, 4g) channels-first and IoU predictions (B, M); g = S /
    patch, M = num_multimask_outputs (or 1 with ``multimask_output=False``). Each image is
    decoded with its own prompts, as the official ``Sam.forward`` does.
    """

    output_format = Format.CHANNELS_FIRST

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoderViT(config)
        self.prompt_encoder = build_prompt_encoder(config)
        self.mask_decoder = build_mask_decoder(config)

    def forward(
        self,
        images: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_inputs(self, "torch", images, point_coords, point_labels)
        embeddings = self.image_encoder(images)
        image_pe = self.prompt_encoder.get_dense_pe()
        masks, ious = [], []
        for i in range(images.shape[0]):
            sparse, dense = self.prompt_encoder(
                (point_coords[i : i + 1], point_labels[i : i + 1]), None, None
            )
            m, iou = self.mask_decoder(
                embeddings[i : i + 1], image_pe, sparse, dense, multimask_output
            )
            masks.append(m)
            ious.append(iou)
        return torch.cat(masks), torch.cat(ious)
