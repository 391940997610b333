"""``segment-anything``'s ``SamAutomaticMaskGenerator`` over the Flax ``Sam``.

The bookkeeping is the framework-free ``zoo.sam_amg``; here is the tensor work of one batch of
point prompts (prompt encoder, mask decoder, upsampling to the crop's size as gathers, the
logits against the mask threshold and the two stability cuts), one ``nnx.jit`` function.
Batches are padded to ``points_per_batch`` so one size compiles once (per crop size).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ports.flax.predictor import SamPredictor
from zoo.sam_amg import (
    TAP_NAMES,
    BatchOutput,
    MaskGeneratorBase,
    from_threshold_flags,
    upsample_taps,
)

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
def point_batch(
    prompt_encoder,
    mask_decoder,
    features,
    coords,
    taps,
    mask_threshold: float,
    stability_offset: float,
):
    """(B, 1, 2) point prompts -> threshold flags (3B, h, w) uint8 of the masks at the crop's
    size (``zoo.sam_amg.from_threshold_flags``) and IoU predictions (3B,). Takes
    the two modules it runs, not the whole ``Sam``: ``nnx.jit`` walks the graph of what it is
    given on every call, and the image encoder holds most of the variables."""
    labels = jnp.ones(coords.shape[:2], jnp.int32)
    sparse, dense = prompt_encoder((coords, labels), None, None)
    low_res, iou = mask_decoder(
        features, prompt_encoder.get_dense_pe(), sparse, dense, True
    )  # (B, L, L, 3) channels-last
    size = low_res.shape[1]
    logits = upsample(low_res.transpose(0, 3, 1, 2).reshape(-1, size, size), taps)
    t, off = mask_threshold, stability_offset
    flags = (
        (logits > t - off).astype(jnp.uint8)
        + 2 * (logits > t).astype(jnp.uint8)
        + 4 * (logits > t + off).astype(jnp.uint8)
    )
    return flags, iou.reshape(-1)


class SamAutomaticMaskGenerator(MaskGeneratorBase):
    """Automatic mask generator over a Flax ``ports.flax.models.Sam`` (see ``zoo.sam_amg``)."""

    predictor_class = SamPredictor

    def _predict_batch(self, coords: np.ndarray) -> BatchOutput:
        n, pad = len(coords), self.points_per_batch - len(coords)
        coords = np.concatenate([coords, np.repeat(coords[-1:], pad, axis=0)]).astype(np.float32)
        model = self.predictor.model
        flags, iou = point_batch(
            model.prompt_encoder,
            model.mask_decoder,
            self.predictor.features,
            jnp.asarray(coords[:, None, :]),
            {k: jnp.asarray(v) for k, v in upsample_taps(self.predictor).items()},
            mask_threshold=float(self.mask_threshold),
            stability_offset=float(self.stability_score_offset),
        )
        masks, stability = from_threshold_flags(np.asarray(flags)[: 3 * n])
        return BatchOutput(masks, np.asarray(iou, np.float32)[: 3 * n], stability)
