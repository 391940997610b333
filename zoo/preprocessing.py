"""The input a checkpoint's weights expect, applied to a uint8 RGB image. Framework-free (NumPy).

A config's ``preprocessing`` field (not architecture: the weights' meaning) names one of
``PREPROCESSING``; the layout the weights came from sets it, and the ports' saved configs and
the converted files keep it, so weights converted from keras.applications to Flax still say
"caffe".

``imagenet``
    torchvision's: RGB scaled to [0, 1], minus ``IMAGENET_MEAN``, over ``IMAGENET_STD``.
``caffe``
    keras.applications' VGG (``keras.applications.vgg19.preprocess_input``, the weights converted
    from Caffe): RGB 0..255 reordered to BGR, minus ``CAFFE_MEAN_BGR``; not scaled.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CAFFE_MEAN_BGR", "IMAGENET_MEAN", "IMAGENET_STD", "PREPROCESSING", "preprocess"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: keras.applications' ``imagenet_utils`` "caffe" mean, in B, G, R order
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

#: mode -> what the weights expect
PREPROCESSING = {
    "imagenet": "RGB / 255, normalized by the ImageNet mean and std (torchvision)",
    "caffe": "RGB 0..255 -> BGR minus the Caffe mean (keras.applications' VGG)",
}


def preprocess(image: np.ndarray, mode: str, channels_first: bool = False) -> np.ndarray:
    """``image`` (H, W, 3) or (B, H, W, 3) uint8 RGB -> float32 the way ``mode`` weights expect
    it, channels-last as given (the ports' input) or, with ``channels_first``, (..., 3, H, W)
    (the reference's)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(
            f"preprocess takes a (H, W, 3) or (B, H, W, 3) uint8 RGB image, got "
            f"{image.dtype} of shape {image.shape}"
        )
    x = image.astype(np.float32)
    if mode == "imagenet":
        x = (x / np.float32(255) - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    elif mode == "caffe":
        x = x[..., ::-1] - np.float32(CAFFE_MEAN_BGR)
    else:
        raise ValueError(f"unknown preprocessing {mode!r}; known: {', '.join(PREPROCESSING)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3)) if channels_first else x
