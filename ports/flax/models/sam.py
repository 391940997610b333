"""Segment Anything, Flax NNX port of ``zoo.models.sam``: ``image_encoder``, ``prompt_encoder``
and ``mask_decoder`` under the official names, channels-last."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.models.sam_image_encoder import ImageEncoderViT
from ports.flax.models.sam_mask_decoder import MaskDecoder
from ports.flax.models.sam_prompt_encoder import PromptEncoder
from zoo.families.sam import SamConfig, mask_decoder_arguments, prompt_encoder_arguments
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["Sam"]


@register_model("sam", "flax")
class Sam(nnx.Module):
    """SAM with point prompts in one call; the predictor calls the three parts itself.

    __call__(images (B, S, S, in_chans) normalized and padded, point_coords (B, N, 2) as (x, y)
    pixels, point_labels (B, N)) -> low-res mask logits (B, 4g, 4g, M) channels-last and IoU
    predictions (B, M). Each image is decoded with its own prompts.
    """

    def __init__(self, config: SamConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        self.image_encoder = ImageEncoderViT(config, rngs=rngs)
        self.prompt_encoder = PromptEncoder(**prompt_encoder_arguments(config), rngs=rngs)
        self.mask_decoder = MaskDecoder(**mask_decoder_arguments(config), rngs=rngs)

    def __call__(
        self,
        images: jax.Array,
        point_coords: jax.Array,
        point_labels: jax.Array,
        multimask_output: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        check_inputs(self, "flax", images, point_coords, point_labels)
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
        return jnp.concatenate(masks), jnp.concatenate(ious)
