"""Segment Anything pre- and post-processing that needs no deep-learning framework, and the
predictor logic every framework shares.

The photo is resized once, here, with Pillow (what ``segment-anything`` does through torchvision),
normalized and padded in NumPy: every framework's encoder sees the same pixels. Prompt coordinates
are rescaled here too. The mask upsampling (256 x 256 logits -> padded input size -> crop -> the
photo's size, bilinear, ``align_corners=False``) runs inside each framework as two constant
matrices, one per axis (``mask_resize_matrices``), so it is part of every port's parity check.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.families.sam import SamConfig
from zoo.interpolate import resize_matrix

__all__ = [
    "DECODER_INPUTS",
    "ResizeLongestSide",
    "SamPredictorBase",
    "mask_resize_matrices",
    "preprocess",
]

#: the mask decoder's inputs in its call order, by the names the fine-tuning recipes' batches
#: give them (``zoo.finetune``, ``ports.keras.finetune``, ``ports.flax.finetune``)
DECODER_INPUTS = (
    "image_embeddings",
    "image_pe",
    "sparse_prompt_embeddings",
    "dense_prompt_embeddings",
)


class ResizeLongestSide:
    """Resize so the longest side is ``target_length`` (Pillow bilinear), and map prompt
    coordinates (x, y) and boxes (x0, y0, x1, y1) from the photo's pixels to the resized ones."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(old_h: int, old_w: int, long_side: int) -> tuple[int, int]:
        """(new_h, new_w): both sides scaled by ``long_side / max(old_h, old_w)``, rounded."""
        scale = long_side * 1.0 / max(old_h, old_w)
        return int(old_h * scale + 0.5), int(old_w * scale + 0.5)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8 with max(h, w) == target_length."""
        from PIL import Image

        new_h, new_w = self.get_preprocess_shape(*image.shape[:2], self.target_length)
        resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
        return np.asarray(resized)

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """(..., 2) pixel coordinates (x, y) of the photo -> of the resized photo (float)."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = np.array(coords, dtype=np.float64)
        coords[..., 0] *= new_w / old_w
        coords[..., 1] *= new_h / old_h
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """(..., 4) boxes (x0, y0, x1, y1) -> (N, 4) in the resized photo."""
        return self.apply_coords(np.reshape(boxes, (-1, 2, 2)), original_size).reshape(-1, 4)


def preprocess(image: np.ndarray, config: SamConfig) -> np.ndarray:
    """Resized (h, w, 3) uint8 photo -> (1, img_size, img_size, 3) float32: normalized with the
    config's pixel mean / std, zero-padded at the bottom and right (channels-last)."""
    x = image.astype(np.float32)
    x = (x - np.asarray(config.pixel_mean, np.float32)) / np.asarray(config.pixel_std, np.float32)
    h, w = x.shape[:2]
    out = np.zeros((1, config.img_size, config.img_size, 3), np.float32)
    out[0, :h, :w] = x
    return out


def mask_resize_matrices(
    low_res: int, input_size: tuple[int, int], original_size: tuple[int, int], img_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(R_h (H, low_res), R_w (W, low_res)) float32 with ``R_h @ m @ R_w.T`` equal to SAM's
    ``postprocess_masks`` of one low-res mask ``m``: bilinear to (img_size, img_size), crop to
    ``input_size``, bilinear to ``original_size`` (``align_corners=False``, no antialiasing).
    Composed in float64, so the result is as exact as the two-step original or more."""
    out = []
    for axis in range(2):
        up = resize_matrix(low_res, img_size, "bilinear")[: input_size[axis]]
        down = resize_matrix(input_size[axis], original_size[axis], "bilinear")
        out.append((down.astype(np.float64) @ up.astype(np.float64)).astype(np.float32))
    return out[0], out[1]


class SamPredictorBase:
    """``segment-anything``'s ``SamPredictor`` API over any framework's ``Sam``: ``set_image``
    once, then ``predict`` for as many prompts as wanted (the image embedding is reused).

    Subclasses supply ``_encode`` (normalized padded image -> embedding, kept in the framework)
    and ``_decode`` (prompts + resize matrices -> masks logits at the photo's size, IoU, low-res
    logits, as NumPy). Everything else (validation, resizing, coordinates, thresholding) is here.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.config: SamConfig = model.config
        if self.config.encoder_only:
            raise ValueError("SamPredictor needs a full Sam model, not the image encoder alone")
        self.transform = ResizeLongestSide(self.config.img_size)
        self.reset_image()

    def reset_image(self) -> None:
        self.features = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.is_image_set = False

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed a (H, W, 3) uint8 photo (RGB, or BGR with ``image_format="BGR"``)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"set_image expects an (H, W, 3) uint8 array, got {image.dtype} {image.shape}"
            )
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if image_format == "BGR":
            image = image[..., ::-1]
        resized = self.transform.apply_image(np.ascontiguousarray(image))
        self.reset_image()
        self.original_size = (int(image.shape[0]), int(image.shape[1]))
        self.input_size = (int(resized.shape[0]), int(resized.shape[1]))
        self.features = self._encode(preprocess(resized, self.config))
        self.is_image_set = True

    def get_image_embedding(self) -> np.ndarray:
        """The embedding of the current image as NumPy, (1, C, 64, 64) as ``segment-anything``."""
        if not self.is_image_set:
            raise RuntimeError("no image set: call set_image first")
        return self._embedding_numpy()

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts, in the photo's pixels.

        point_coords (N, 2) as (x, y) with point_labels (N,) (1 foreground, 0 background);
        box (4,) as (x0, y0, x1, y1); mask_input (1, 256, 256) low-res logits of an earlier
        prediction. Returns masks (C, H, W) (bool, or float logits with ``return_logits``), IoU
        predictions (C,) and low-res logits (C, 256, 256); C is 3 with ``multimask_output``, else 1.
        """
        if not self.is_image_set:
            raise RuntimeError("no image set: call set_image first")
        coords = labels = boxes = masks = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            coords = np.asarray(point_coords, np.float64)
            labels = np.asarray(point_labels)
            if coords.ndim != 2 or coords.shape[1] != 2 or labels.shape != coords.shape[:1]:
                raise ValueError(
                    f"point_coords must be (N, 2) and point_labels (N,), got {coords.shape} "
                    f"and {labels.shape}"
                )
            coords = self.transform.apply_coords(coords, self.original_size)[None]
            coords, labels = coords.astype(np.float32), labels[None].astype(np.int32)
        elif point_labels is not None:
            raise ValueError("point_labels given without point_coords")
        if box is not None:
            box = np.asarray(box, np.float64)
            if box.size != 4:
                raise ValueError(f"box must hold 4 numbers (x0, y0, x1, y1), got {box.shape}")
            boxes = self.transform.apply_boxes(box, self.original_size).astype(np.float32)
        if mask_input is not None:
            masks = np.asarray(mask_input, np.float32)
            low = 4 * self.config.image_embedding_size
            if masks.shape != (1, low, low):
                raise ValueError(f"mask_input must be (1, {low}, {low}), got {masks.shape}")
            masks = masks[None]
        r_h, r_w = mask_resize_matrices(
            4 * self.config.image_embedding_size,
            self.input_size,
            self.original_size,
            self.config.img_size,
        )
        logits, iou, low_res = self._decode(
            coords, labels, boxes, masks, multimask_output, r_h, r_w
        )
        out = logits[0] if return_logits else logits[0] > self.config.mask_threshold
        return out, iou[0], low_res[0]

    # ---------------------------------------------------------------- framework hooks

    def _encode(self, image: np.ndarray) -> Any:
        """(1, S, S, 3) normalized padded image -> the framework's image embedding."""
        raise NotImplementedError

    def _embedding_numpy(self) -> np.ndarray:
        raise NotImplementedError

    def _decode(
        self,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        masks: np.ndarray | None,
        multimask_output: bool,
        r_h: np.ndarray,
        r_w: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prompts (already in the resized photo's pixels; masks (1, 1, 256, 256)) -> masks
        logits (1, C, H, W) at the photo's size, IoU (1, C), low-res logits (1, C, 256, 256)."""
        raise NotImplementedError
