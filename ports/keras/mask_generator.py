"""``segment-anything``'s ``SamAutomaticMaskGenerator`` over the Keras ``Sam`` (any backend).

The bookkeeping is the framework-free ``zoo.sam_amg``; here is the tensor work of one batch of
point prompts: prompt encoder, mask decoder, upsampling of the low-res logits to the crop's
size (PyTorch's bilinear resize as gathers, ``zoo.sam_amg.upsample_taps``), the logits
against the mask threshold and the two stability cuts, in one Keras model run with
``predict_on_batch`` (compiled: ``tf.function`` / ``jax.jit``). Batches are padded to
``points_per_batch`` so one size compiles once (per crop size).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ports.keras.predictor import SamPredictor
from zoo.sam_amg import (
    TAP_NAMES,
    BatchOutput,
    MaskGeneratorBase,
    from_threshold_flags,
    upsample_taps,
)

__all__ = ["SamAutomaticMaskGenerator"]


def _resize_axis(x, taps, axis: int):
    """Bilinear along ``axis`` of (N, H, W) with gather taps (lo, hi, w_lo, w_hi)."""
    lo, hi, w_lo, w_hi = taps
    shape = (1, -1, 1) if axis == 1 else (1, 1, -1)
    return ops.take(x, lo, axis=axis) * ops.reshape(w_lo, shape) + ops.take(
        x, hi, axis=axis
    ) * ops.reshape(w_hi, shape)


def upsample(low_res, taps: dict):
    """(N, L, L) logits -> (N, h, w): to the model's input size, cropped to the resized
    image, then to the crop's size; each step along the width, then the height."""
    x = _resize_axis(low_res, [taps[f"w1_{n}"] for n in TAP_NAMES], 2)
    x = _resize_axis(x, [taps[f"h1_{n}"] for n in TAP_NAMES], 1)
    x = _resize_axis(x, [taps[f"w2_{n}"] for n in TAP_NAMES], 2)
    return _resize_axis(x, [taps[f"h2_{n}"] for n in TAP_NAMES], 1)


class PointBatch(keras.Model):
    """One batch of single-point prompts against the set image embedding -> threshold flags
    (3B, h, w) uint8 of the masks at the crop's size (``zoo.sam_amg.from_threshold_flags``)
    and IoU predictions (3B,). Holds no variables of its
    own: the ``Sam``'s prompt encoder and mask decoder are its layers."""

    def __init__(self, sam, mask_threshold: float, stability_offset: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.mask_threshold = float(mask_threshold)
        self.stability_offset = float(stability_offset)

    def call(self, inputs: dict):
        coords = inputs["coords"]
        labels = ops.ones(ops.shape(coords)[:2], dtype="int32")
        sparse, dense = self.prompt_encoder((coords, labels), None, None)
        low_res, iou = self.mask_decoder(
            inputs["features"],
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output=True,
        )  # (B, L, L, 3) channels-last, (B, 3)
        b, size = ops.shape(low_res)[0], ops.shape(low_res)[1]
        low_res = ops.reshape(ops.transpose(low_res, (0, 3, 1, 2)), (-1, size, size))
        logits = upsample(low_res, inputs)
        t, off = self.mask_threshold, self.stability_offset
        flags = (
            ops.cast(logits > t - off, "uint8")
            + 2 * ops.cast(logits > t, "uint8")
            + 4 * ops.cast(logits > t + off, "uint8")
        )
        return flags, ops.reshape(iou, (b * 3,))


class SamAutomaticMaskGenerator(MaskGeneratorBase):
    """Automatic mask generator over a Keras ``ports.keras.models.Sam`` (see ``zoo.sam_amg``)."""

    predictor_class = SamPredictor

    def __init__(self, model, *args, **kwargs) -> None:
        super().__init__(model, *args, **kwargs)
        self.point_batch = PointBatch(model, self.mask_threshold, self.stability_score_offset)

    def _predict_batch(self, coords: np.ndarray) -> BatchOutput:
        n, pad = len(coords), self.points_per_batch - len(coords)
        coords = np.concatenate([coords, np.repeat(coords[-1:], pad, axis=0)]).astype(np.float32)
        predictor = self.predictor
        inputs = upsample_taps(predictor)
        inputs["coords"] = coords[:, None, :]
        inputs["features"] = predictor.features
        flags, iou = self.point_batch.predict_on_batch(inputs)
        masks, stability = from_threshold_flags(np.asarray(flags)[: 3 * n])
        return BatchOutput(masks, np.asarray(iou, np.float32)[: 3 * n], stability)
