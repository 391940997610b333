"""Reference PyTorch models. Each takes a config from ``zoo.configs``; ``create_model(name)`` builds
a registered variant. ``ports.keras.models`` and ``ports.flax.models`` export the same names."""

from __future__ import annotations

from zoo.configs import resolve
from zoo.models.swin import BasicLayer, SwinTransformer
from zoo.models.video_swin import I3DHead, SwinTransformer3D, VideoSwin

__all__ = [
    "BasicLayer",
    "I3DHead",
    "SwinTransformer",
    "SwinTransformer3D",
    "VideoSwin",
    "create_model",
]


def create_model(name: str, **overrides):
    """The registered variant ``name`` (see ``zoo.configs.VARIANTS``), config fields overridden by
    keyword, in eval mode."""
    model, config = resolve(name, **overrides)
    return globals()[model](config).eval()
