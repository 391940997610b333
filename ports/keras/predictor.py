"""``segment-anything``'s ``SamPredictor`` over the Keras ``Sam`` (any backend). The photo is
resized and normalized by the framework-free ``zoo.sam_transforms``; the encoder, prompt
encoder, mask decoder and mask upsampling run in Keras."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from zoo.sam_transforms import SamPredictorBase

__all__ = ["SamPredictor"]


class SamPredictor(SamPredictorBase):
    """Predictor over a Keras ``ports.keras.models.Sam``. The image encoder runs compiled
    (``predict_on_batch``: ``tf.function`` / ``jax.jit``); prompts run eagerly."""

    def _encode(self, image: np.ndarray):
        return ops.convert_to_tensor(self.model.image_encoder.predict_on_batch(image))

    def _embedding_numpy(self) -> np.ndarray:
        return keras.ops.convert_to_numpy(self.features).transpose(0, 3, 1, 2)

    def _decode(self, coords, labels, boxes, masks, multimask_output, r_h, r_w):
        prompt_encoder = self.model.prompt_encoder
        points = None
        if coords is not None:
            points = (ops.convert_to_tensor(coords), ops.convert_to_tensor(labels))
        sparse, dense = prompt_encoder(
            points,
            None if boxes is None else ops.convert_to_tensor(boxes),
            None if masks is None else ops.convert_to_tensor(masks.transpose(0, 2, 3, 1)),
        )
        low_res, iou = self.model.mask_decoder(
            self.features,
            prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output=multimask_output,
        )  # low_res (1, 256, 256, C) channels-last
        upscaled = ops.einsum(
            "hi,bijm,wj->bmhw", ops.convert_to_tensor(r_h), low_res, ops.convert_to_tensor(r_w)
        )
        low_res = ops.convert_to_numpy(low_res).transpose(0, 3, 1, 2)
        return ops.convert_to_numpy(upscaled), ops.convert_to_numpy(iou), low_res
