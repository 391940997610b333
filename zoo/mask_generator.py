"""``segment-anything``'s ``SamAutomaticMaskGenerator`` over the reference ``Sam``.

The bookkeeping (grids, crops, filters, NMS, RLE, records) is ``zoo.sam_amg``; this module is
the reference's tensor work, op for op the official ``SamPredictor.predict_torch`` and
``Sam.postprocess_masks`` (point prompts in float64, ``F.interpolate`` twice), and torchvision's
``batched_nms`` as the official generator calls it, so the records equal the official
generator's, in the same order, including the order among tied scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops.boxes import batched_nms  # with torch: importing it after TensorFlow crashes

from zoo.predictor import SamPredictor
from zoo.sam_amg import BatchOutput, MaskGeneratorBase, nms

__all__ = [
    "RecordLogits",
    "SamAutomaticMaskGenerator",
    "StableTiesMaskGenerator",
    "stability_score",
]


def stability_score(masks: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """(N, H, W) logits -> (N,) float32: IoU of the masks above ``threshold + offset`` and
    above ``threshold - offset`` (the first lies inside the second), counts as int32."""
    inter = (masks > threshold + offset).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    union = (masks > threshold - offset).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    return inter / union


class SamAutomaticMaskGenerator(MaskGeneratorBase):
    """Automatic mask generator over a reference ``zoo.models.Sam`` (see ``zoo.sam_amg``)."""

    predictor_class = SamPredictor

    @torch.inference_mode()
    def mask_logits(self, coords: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2) float64 points in the resized image's pixels -> mask logits (3B, h, w) at
        the image's size and IoU predictions (3B,)."""
        predictor = self.predictor
        model = predictor.model
        points = torch.as_tensor(coords)[:, None, :]
        labels = torch.ones(points.shape[0], 1, dtype=torch.int)
        sparse, dense = model.prompt_encoder((points, labels), None, None)
        low_res, iou = model.mask_decoder(
            predictor.features, model.prompt_encoder.get_dense_pe(), sparse, dense, True
        )
        size = self.predictor.config.img_size
        masks = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : predictor.input_size[0], : predictor.input_size[1]]
        masks = F.interpolate(masks, predictor.original_size, mode="bilinear", align_corners=False)
        return masks.flatten(0, 1), iou.flatten(0, 1)

    @torch.inference_mode()
    def _predict_batch(self, coords: np.ndarray) -> BatchOutput:
        logits, iou = self.mask_logits(coords)
        stability = stability_score(logits, self.mask_threshold, self.stability_score_offset)
        return BatchOutput(
            masks=(logits > self.mask_threshold).numpy(),
            iou_preds=iou.numpy(),
            stability_score=stability.numpy(),
        )

    def _nms(self, boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
        boxes = torch.as_tensor(boxes).float()
        keep = batched_nms(
            boxes, torch.as_tensor(scores), torch.zeros(len(boxes)), iou_threshold=iou_threshold
        )
        return keep.numpy()


class StableTiesMaskGenerator(SamAutomaticMaskGenerator):
    """The reference with the ports' NMS (``zoo.sam_amg.nms``: tied scores in production order)
    instead of torchvision's (tied scores in the order of torch's unstable sort): what a port's
    records are compared with."""

    def _nms(self, boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
        return nms(boxes, scores, iou_threshold)


class RecordLogits:
    """The mask logits behind a generator record, at the photo's size (``-inf`` outside the
    record's crop): what decided each pixel, for telling near-ties from errors when another
    run's masks differ (``zoo.amg_agreement``). The record's mask is the one of its point's
    three whose predicted IoU is nearest the record's. ``crop_logits`` is the hook a peer's
    generator overrides (the parity tests judge the reference against segment-anything's)."""

    def __init__(self, generator: Any, image: np.ndarray) -> None:
        self.generator, self.image = generator, np.asarray(image)
        self._crop: tuple | None = None

    def crop_logits(self, crop: np.ndarray | None, points: np.ndarray) -> tuple:
        """(Set ``crop`` if given, then) (N, 2) points in the crop's pixels -> logits (3N, h, w)
        and IoU predictions (3N,) as NumPy."""
        predictor = self.generator.predictor
        if crop is not None:
            predictor.set_image(crop)
        coords = predictor.transform.apply_coords(points, predictor.original_size)
        logits, iou = self.generator.mask_logits(coords)
        return logits.numpy(), iou.numpy()

    def __call__(self, record: dict) -> np.ndarray:
        x, y, w, h = (int(v) for v in record["crop_box"])  # official: float if a crop was empty
        crop = None
        if self._crop != (x, y, w, h):
            crop = np.ascontiguousarray(self.image[y : y + h, x : x + w])
            self._crop = (x, y, w, h)
        point = np.asarray(record["point_coords"], np.float64) - np.array([x, y])
        logits, iou = self.crop_logits(crop, point)
        k = int(np.argmin(np.abs(iou - record["predicted_iou"])))
        out = np.full(self.image.shape[:2], -np.inf, np.float32)
        out[y : y + h, x : x + w] = logits[k]
        return out
