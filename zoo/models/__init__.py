"""Reference PyTorch models. Each takes a config from ``zoo.configs``; ``create_model(name)`` builds
a registered variant. ``ports.keras.models`` and ``ports.flax.models`` export the same names."""

from __future__ import annotations

from zoo.configs import resolve
from zoo.models.sam import Sam
from zoo.models.sam_image_encoder import ImageEncoderViT
from zoo.models.sam_mask_decoder import MaskDecoder, TwoWayTransformer
from zoo.models.sam_prompt_encoder import PromptEncoder
from zoo.models.swin import BasicLayer, SwinTransformer
from zoo.models.video_swin import I3DHead, SwinTransformer3D, VideoSwin
from zoo.models.vitdet import SimpleFeaturePyramid, ViT

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
    "create_model",
]


def create_model(name: str, **overrides):
    """The registered variant ``name`` (see ``zoo.configs.VARIANTS``), config fields overridden by
    keyword, in eval mode."""
    model, config = resolve(name, **overrides)
    return globals()[model](config).eval()
