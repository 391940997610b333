"""Flax NNX port of ``zoo.models``: the same model names, module trees and configs, channels-last.
``create_model(name)`` builds a registered variant (``zoo.configs.VARIANTS``)."""

from __future__ import annotations

from flax import nnx

from ports.flax.models.sam import Sam
from ports.flax.models.sam_image_encoder import ImageEncoderViT
from ports.flax.models.sam_mask_decoder import MaskDecoder, TwoWayTransformer
from ports.flax.models.sam_prompt_encoder import PromptEncoder
from ports.flax.models.swin import BasicLayer, SwinTransformer
from ports.flax.models.video_swin import I3DHead, SwinTransformer3D, VideoSwin
from ports.flax.models.vitdet import SimpleFeaturePyramid, ViT
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
    "abstract_model",
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


def model_class(name: str) -> type[nnx.Module]:
    """The Flax model class registered under the reference class name ``name``."""
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model class {name!r}; known: {', '.join(_MODELS)}") from None


def create_model(name: str, *, rngs: nnx.Rngs | None = None, **overrides) -> nnx.Module:
    """The registered variant ``name`` (see ``zoo.configs.VARIANTS``), config fields overridden by
    keyword, in eval mode. Parameters are initialized from ``rngs`` (default ``nnx.Rngs(0)``)."""
    model_name, config = resolve(name, **overrides)
    model = model_class(model_name)(config, rngs=rngs if rngs is not None else nnx.Rngs(0))
    model.eval()
    return model


def abstract_model(config: Config, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """The model ``config`` describes with abstract parameters (``nnx.eval_shape``: no random
    initialization, which would compile once per parameter shape), for filling from a file or a
    weight transfer. Its dropout / drop-path streams get concrete keys from ``rngs`` (default
    ``nnx.Rngs(0)``), so once the parameters are set the model runs, jitted or not."""
    cls = model_class(MODEL_CLASSES[config.family])
    model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.RngStream):
            fresh = rngs[node.tag].fork()
            node.key.set_value(fresh.key.get_value())
            node.count.set_value(fresh.count.get_value())
    return model
