"""Segment Anything, Keras 3 port of ``zoo.models.sam``: ``image_encoder``, ``prompt_encoder`` and
``mask_decoder`` under the official names, channels-last, ``keras.ops`` only."""

from __future__ import annotations

import keras

from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
from ports.keras.models.sam_image_encoder import ImageEncoderViT
from ports.keras.models.sam_mask_decoder import MaskDecoder
from ports.keras.models.sam_prompt_encoder import PromptEncoder
from zoo.families.sam import SamConfig, mask_decoder_arguments, prompt_encoder_arguments
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["Sam"]


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("sam", "keras")
class Sam(ZooModel):
    """SAM with point prompts in one call; the predictor calls the three parts itself.

    call(images (B, S, S, in_chans) normalized and padded, point_coords (B, N, 2) as (x, y)
    pixels, point_labels (B, N)) -> low-res mask logits (B, 4g, 4g, M) channels-last and IoU
    predictions (B, M). Each image is decoded with its own prompts.
    """

    def __init__(self, config: SamConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.image_encoder = ImageEncoderViT(config, name="image_encoder")
        self.prompt_encoder = PromptEncoder(
            **prompt_encoder_arguments(config), name="prompt_encoder"
        )
        self.mask_decoder = MaskDecoder(**mask_decoder_arguments(config), name="mask_decoder")

    def build(self, input_shape: tuple | None = None) -> None:
        """Every variable; only the image encoder's input is open (spatial sizes None)."""
        shape = input_shape if input_shape is not None else (None, None, None, 3)
        self.image_encoder.build(shape)
        self.prompt_encoder.build()
        self.mask_decoder.build()

    def call(
        self,
        images: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        multimask_output: bool = True,
        training: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        check_inputs(self, "keras", images, point_coords, point_labels)
        embeddings = self.image_encoder(images)
        image_pe = self.prompt_encoder.get_dense_pe()
        masks, ious = [], []
        for i in range(images.shape[0]):
            sparse, dense = self.prompt_encoder(
                (point_coords[i : i + 1], point_labels[i : i + 1]), None, None
            )
            m, iou = self.mask_decoder(
                embeddings[i : i + 1], image_pe, sparse, dense, multimask_output=multimask_output
            )
            masks.append(m)
            ious.append(iou)
        return keras.ops.concatenate(masks), keras.ops.concatenate(ious)
