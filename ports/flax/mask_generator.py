"""``segment-anything``'s ``SamAutomaticMaskGenerator`` over the Flax ``Sam``.

The bookkeeping is the framework-free ``zoo.sam_amg``; here is the tensor work of one batch of
point prompts (prompt encoder, mask decoder, upsampling to the crop's size as gathers, stability
score, binary masks), one ``nnx.jit`` function. Batches are padded to ``points_per_batch`` so
one size compiles once (per crop size).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ports.flax.predictor import SamPredictor
from zoo.sam_amg import TAP_NAMES, BatchOutput, MaskGeneratorBase, upsample_taps

__all__ = ["SamAutomaticMaskGenerator"]


def _resize_axis(x: jax.Array, taps, axis: int) -> jax.Array:
    lo, hi, w_lo, w_hi = taps
    shape = (1, -1, 1) if axis == 1 else (1, 1, -1)
    return jnp.take(x, lo, axis=axis) * w_lo.reshape(shape) + jnp.take(
        x, hi, axis=axis
    ) * w_hi.reshape(shape)


def upsample(low_res: jax.Array, taps: dict) -> jax.Array:
    """(N, L, L) logits -> (N, h, w), as ``ports.keras.mask_generator.upsample``."""
    x = _resize_axis(low_res, [taps[f"w1_{n}"] for n in TAP_NAMES], 2)
    x = _resize_axis(x, [taps[f"h1_{n}"] for n in TAP_NAMES], 1)
    x = _resize_axis(x, [taps[f"w2_{n}"] for n in TAP_NAMES], 2)
    return _resize_axis(x, [taps[f"h2_{n}"] for n in TAP_NAMES], 1)


@partial(nnx.jit, static_argnames=("mask_threshold", "stability_offset"))
def point_batch(model, features, coords, taps, mask_threshold: float, stability_offset: float):
    """(B, 1, 2) point prompts -> binary masks (3B, h, w), IoU (3B,), stability (3B,)."""
    labels = jnp.ones(coords.shape[:2], jnp.int32)
    sparse, dense = model.prompt_encoder((coords, labels), None, None)
    low_res, iou = model.mask_decoder(
        features, model.prompt_encoder.get_dense_pe(), sparse, dense, True
    )  # (B, L, L, 3) channels-last
    size = low_res.shape[1]
    logits = upsample(low_res.transpose(0, 3, 1, 2).reshape(-1, size, size), taps)
    t, off = mask_threshold, stability_offset
    inter = jnp.sum(logits > t + off, axis=(1, 2), dtype=jnp.int32)
    union = jnp.sum(logits > t - off, axis=(1, 2), dtype=jnp.int32)
    stability = inter.astype(jnp.float32) / union.astype(jnp.float32)
    return logits > t, iou.reshape(-1), stability


class SamAutomaticMaskGenerator(MaskGeneratorBase):
    """Automatic mask generator over a Flax ``ports.flax.models.Sam`` (see ``zoo.sam_amg``)."""

    predictor_class = SamPredictor

    def _predict_batch(self, coords: np.ndarray) -> BatchOutput:
        n, pad = len(coords), self.points_per_batch - len(coords)
        coords = np.concatenate([coords, np.repeat(coords[-1:], pad, axis=0)]).astype(np.float32)
        masks, iou, stability = point_batch(
            self.predictor.model,
            self.predictor.features,
            jnp.asarray(coords[:, None, :]),
            {k: jnp.asarray(v) for k, v in upsample_taps(self.predictor).items()},
            mask_threshold=float(self.mask_threshold),
            stability_offset=float(self.stability_score_offset),
        )
        return BatchOutput(
            masks=np.asarray(masks)[: 3 * n],
            iou_preds=np.asarray(iou, np.float32)[: 3 * n],
            stability_score=np.asarray(stability, np.float32)[: 3 * n],
        )
