"""``segment-anything``'s ``SamPredictor`` over the reference ``Sam``: ``set_image`` once, then
``predict`` with points, a box, a mask or any mix. The framework-free part (resizing, coordinates,
validation) is ``zoo.sam_transforms.SamPredictorBase``; ``ports.keras.predictor`` and
``ports.flax.predictor`` are the same class over the ports."""

from __future__ import annotations

import numpy as np
import torch

from zoo.models.sam import Sam
from zoo.sam_transforms import SamPredictorBase

__all__ = ["SamPredictor"]


class SamPredictor(SamPredictorBase):
    """Predictor over a reference ``Sam`` (eval mode, inference only)."""

    def __init__(self, model: Sam) -> None:
        super().__init__(model.eval())

    @torch.inference_mode()
    def _encode(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2)))
        return self.model.image_encoder(x)

    def _embedding_numpy(self) -> np.ndarray:
        return self.features.numpy()

    @torch.inference_mode()
    def _decode(self, coords, labels, boxes, masks, multimask_output, r_h, r_w):
        prompt_encoder = self.model.prompt_encoder
        points = None
        if coords is not None:
            points = (torch.from_numpy(coords), torch.from_numpy(labels))
        sparse, dense = prompt_encoder(
            points,
            None if boxes is None else torch.from_numpy(boxes),
            None if masks is None else torch.from_numpy(masks),
        )
        low_res, iou = self.model.mask_decoder(
            self.features, prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
        )
        upscaled = torch.einsum(
            "hi,bmij,wj->bmhw", torch.from_numpy(r_h), low_res, torch.from_numpy(r_w)
        )
        return upscaled.numpy(), iou.numpy(), low_res.numpy()
