"""The input a checkpoint's weights expect. Framework-free (NumPy).

A config's ``preprocessing`` field (not architecture: the weights' meaning) names one of
``PREPROCESSING``; the layout the weights came from sets it, and the ports' saved configs and
the converted files keep it, so weights converted from keras.applications to Flax still say
"caffe". Each is a ``Normalization`` of an RGB image: ``preprocess`` applies it to uint8 photos,
``Normalization.affine`` gives the constants a framework applies differentiably (style transfer
optimizes the pixels through it: ``zoo.style``).

``imagenet``
    torchvision's: RGB scaled to [0, 1], minus ``IMAGENET_MEAN``, over ``IMAGENET_STD``.
``caffe``
    keras.applications' VGG (``keras.applications.vgg19.preprocess_input``, the weights converted
    from Caffe): RGB 0..255 reordered to BGR, minus ``CAFFE_MEAN_BGR``; not scaled.
``clip``
    OpenAI CLIP's (and open_clip's for OpenAI's weights): RGB in [0, 1], minus ``CLIP_MEAN``,
    over ``CLIP_STD``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CAFFE_MEAN_BGR",
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATIONS",
    "PREPROCESSING",
    "Normalization",
    "check_preprocessing",
    "preprocess",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: keras.applications' ``imagenet_utils`` "caffe" mean, in B, G, R order
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Normalization:
    """What weights expect of an RGB image in [0, 1]: ``x * scale``, the channels reversed when
    ``bgr``, minus ``mean``, over ``std`` (per channel, in the order fed)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0
    bgr: bool = False

    def affine(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(order, a, b)``: the normalized image is ``x[..., order] * a + b`` for ``x`` in
        [0, 1] channels-last (float32 constants; what every framework applies)."""
        order = np.array([2, 1, 0] if self.bgr else [0, 1, 2])
        std = np.asarray(self.std, np.float32)
        a = (np.float32(self.scale) / std).astype(np.float32)
        b = (-np.asarray(self.mean, np.float32) / std).astype(np.float32)
        return order, a, b


#: mode -> its normalization
NORMALIZATIONS = {
    "imagenet": Normalization(IMAGENET_MEAN, IMAGENET_STD),
    "caffe": Normalization(CAFFE_MEAN_BGR, scale=255.0, bgr=True),
    "clip": Normalization(CLIP_MEAN, CLIP_STD),
}
#: mode -> what the weights expect
PREPROCESSING = {
    "imagenet": "RGB / 255, normalized by the ImageNet mean and std (torchvision)",
    "caffe": "RGB 0..255 -> BGR minus the Caffe mean (keras.applications' VGG)",
    "clip": "RGB / 255, normalized by CLIP's mean and std (OpenAI CLIP, open_clip)",
}


def check_preprocessing(config: Any) -> None:
    """``ConfigError`` naming the field when ``config.preprocessing`` is none of
    ``PREPROCESSING`` (every family whose config carries the field calls it in its validate)."""
    from zoo.config_checks import ConfigError

    if config.preprocessing not in PREPROCESSING:
        raise ConfigError(
            f"config field preprocessing: {config.preprocessing!r} is none of "
            f"{', '.join(PREPROCESSING)}"
        )


def preprocess(image: np.ndarray, mode: str, channels_first: bool = False) -> np.ndarray:
    """``image`` (H, W, 3) or (B, H, W, 3) uint8 RGB -> float32 the way ``mode`` weights expect
    it, channels-last as given (the ports' input) or, with ``channels_first``, (..., 3, H, W)
    (the reference's). The arithmetic is each origin's own (``x / 255`` then the mean and std;
    Caffe's 0..255 pixels taken as they are)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(
            f"preprocess takes a (H, W, 3) or (B, H, W, 3) uint8 RGB image, got "
            f"{image.dtype} of shape {image.shape}"
        )
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown preprocessing {mode!r}; known: {', '.join(PREPROCESSING)}")
    norm = NORMALIZATIONS[mode]
    x = image.astype(np.float32)
    if norm.scale != 255.0:
        x = x / np.float32(255) * np.float32(norm.scale)
    if norm.bgr:
        x = x[..., ::-1]
    x = (x - np.float32(norm.mean)) / np.float32(norm.std)
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3)) if channels_first else x
