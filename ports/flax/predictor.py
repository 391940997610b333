"""``segment-anything``'s ``SamPredictor`` over the Flax ``Sam``. The photo is resized and
normalized by the framework-free ``zoo.sam_transforms``; the encoder, prompt encoder, mask
decoder and mask upsampling run in JAX, each compiled with ``nnx.jit``."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.sam_transforms import SamPredictorBase

__all__ = ["SamPredictor"]


@nnx.jit
def _encode(model, image: jax.Array) -> jax.Array:
    return model.image_encoder(image)


@partial(nnx.jit, static_argnames="multimask_output")
def _decode(model, features, coords, labels, boxes, masks, r_h, r_w, multimask_output: bool):
    points = None if coords is None else (coords, labels)
    sparse, dense = model.prompt_encoder(points, boxes, masks)
    low_res, iou = model.mask_decoder(
        features, model.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
    )  # low_res (1, 256, 256, C) channels-last
    upscaled = jnp.einsum(
        "hi,bijm,wj->bmhw", r_h, low_res, r_w, precision=jax.lax.Precision.HIGHEST
    )
    return upscaled, iou, low_res


class SamPredictor(SamPredictorBase):
    """Predictor over a Flax ``ports.flax.models.Sam`` (eval mode)."""

    def _encode(self, image: np.ndarray) -> jax.Array:
        return _encode(self.model, jnp.asarray(image))

    def _embedding_numpy(self) -> np.ndarray:
        return np.asarray(self.features).transpose(0, 3, 1, 2)

    def _decode(self, coords, labels, boxes, masks, multimask_output, r_h, r_w):
        upscaled, iou, low_res = _decode(
            self.model,
            self.features,
            None if coords is None else jnp.asarray(coords),
            None if labels is None else jnp.asarray(labels),
            None if boxes is None else jnp.asarray(boxes),
            None if masks is None else jnp.asarray(masks.transpose(0, 2, 3, 1)),
            jnp.asarray(r_h),
            jnp.asarray(r_w),
            multimask_output=multimask_output,
        )
        return np.asarray(upscaled), np.asarray(iou), np.asarray(low_res).transpose(0, 3, 1, 2)
