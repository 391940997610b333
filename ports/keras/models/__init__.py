"""Keras 3 port of ``zoo.models``: the same model names, module trees and configs, channels-last.
``create_model(name)`` builds a registered variant (``zoo.configs.VARIANTS``) with its variables
created, ready for weights. The models save to ``.keras`` (registered under package ``vit_zoo``)."""

from __future__ import annotations

import keras

from ports.keras.models.sam import Sam
from ports.keras.models.sam_image_encoder import ImageEncoderViT
from ports.keras.models.sam_mask_decoder import MaskDecoder, TwoWayTransformer
from ports.keras.models.sam_prompt_encoder import PromptEncoder
from ports.keras.models.swin import BasicLayer, SwinTransformer
from ports.keras.models.video_swin import I3DHead, SwinTransformer3D, VideoSwin
from ports.keras.models.vitdet import SimpleFeaturePyramid, ViT
from zoo.configs import MODEL_CLASSES, Config, resolve

__all__ = [
    "BasicLayer",
    "I3DHead",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "SwinTransformer",
    "SwinTransformer3D",
    "TwoWayTransformer",
    "SimpleFeaturePyramid",
    "ViT",
    "VideoSwin",
    "build_model",
    "create_model",
    "model_class",
]

_MODELS = {
    "SwinTransformer": SwinTransformer,
    "VideoSwin": VideoSwin,
    "Sam": Sam,
    "ImageEncoderViT": ImageEncoderViT,
    "SimpleFeaturePyramid": SimpleFeaturePyramid,
}


def model_class(name: str) -> type[keras.Model]:
    """The Keras model class registered under the reference class name ``name``."""
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model class {name!r}; known: {', '.join(_MODELS)}") from None


def create_model(name: str, **overrides) -> keras.Model:
    """The registered variant ``name`` (see ``zoo.configs.VARIANTS``), config fields overridden by
    keyword, built (its variables exist; spatial sizes stay open, any input size runs)."""
    return build_model(resolve(name, **overrides)[1])


def build_model(config: Config) -> keras.Model:
    """The model ``config`` describes, built: its variables exist, spatial sizes stay open."""
    model = model_class(MODEL_CLASSES[config.family])(config)
    model.build((None, *(None,) * config.spatial_rank, config.in_chans))
    return model
