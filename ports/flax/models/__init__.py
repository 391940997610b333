"""Flax NNX port of ``zoo.models``: the same model names, module trees and configs, channels-last.
One module per family (``zoo.registry.FAMILIES``); each model class registers itself
(``@register_model(family, "flax")``). ``create_model(name)`` builds a registered variant."""

from __future__ import annotations

from typing import Any

from flax import nnx

from ports.flax.layers.variables import abstract, set_compute_dtype
from zoo.configs import Config, resolve
from zoo.registry import lazy_exports, model_class

_BASE = ["abstract_model", "build_model", "create_model", "load_model"]


def build_model(config: Config, *, rngs: nnx.Rngs | None = None, dtype: Any = None) -> nnx.Module:
    """The model ``config`` describes, in eval mode, parameters initialized from ``rngs``
    (default ``nnx.Rngs(0)``). ``dtype``: the layers' computation dtype, as nnx layers take it
    (None: their inputs' and parameters' promoted dtype; ``jnp.bfloat16``: mixed precision,
    parameters stay float32; ``ports.flax.layers.variables.set_compute_dtype``)."""
    model = model_class(config, "flax")(config, rngs=rngs if rngs is not None else nnx.Rngs(0))
    if dtype is not None:
        set_compute_dtype(model, dtype)
    model.eval()
    return model


def create_model(
    name: str | Config | None = None,
    *,
    checkpoint=None,
    features_only=None,
    rngs: nnx.Rngs | None = None,
    dtype: Any = None,
    **overrides,
) -> nnx.Module:
    """The registered variant ``name`` (see ``zoo.registry.VARIANTS``) or the config given (a
    solved one: ``layouts.detect(sd).config``), fields overridden by keyword
    (``dataclasses.replace``), in eval mode. Parameters are initialized from ``rngs`` (default
    ``nnx.Rngs(0)``); ``dtype`` is the layers' computation dtype (``build_model``). An unknown
    name (or None without ``checkpoint``) raises ``zoo.configs.UnknownVariantError``, one line
    naming the known variants.

    With ``checkpoint`` (a Flax ``.safetensors`` / ``.msgpack`` file, a Keras file, any PyTorch
    checkpoint or Hugging Face directory ``weight-convert`` reads) the weights and the
    architecture come from it, as ``zoo.models.create_model`` describes; ``rngs`` then seeds
    only the dropout / drop-path streams."""
    if checkpoint is None:
        if features_only is not None:
            overrides["features_only"] = features_only
        return build_model(resolve(name, **overrides), rngs=rngs, dtype=dtype)
    model = load_model(checkpoint, name, features_only=features_only, rngs=rngs, **overrides)
    if dtype is not None:
        set_compute_dtype(model, dtype)
    return model


def load_model(
    path, name: str | None = None, *, features_only=None, rngs: nnx.Rngs | None = None, **options
) -> nnx.Module:
    """The Flax model of the file at ``path`` with its weights, set one variable at a time
    (``create_model(name, checkpoint=path, ...)``), in eval mode."""
    from weight_convert import loading

    source = loading.read_checkpoint(path, name, features_only=features_only, **options)
    return loading.load_flax(source, rngs=rngs)


def abstract_model(config: Config, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """The model ``config`` describes with abstract parameters (``nnx.eval_shape``: no random
    initialization, which would compile once per parameter shape), for filling from a file or a
    weight transfer. Its dropout / drop-path streams get concrete keys from ``rngs`` (default
    ``nnx.Rngs(0)``), so once the parameters are set the model runs, jitted or not."""
    cls = model_class(config, "flax")
    return abstract(lambda streams: cls(config, rngs=streams), rngs)


__getattr__, __dir__ = lazy_exports("flax", __name__, globals(), _BASE)
