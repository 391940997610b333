"""Keras 3 port of ``zoo.models``: the same model names, module trees and configs, channels-last.
One module per family (``zoo.registry.FAMILIES``); each model class registers itself
(``@register_model(family, "keras")``) and with Keras (``.keras`` files, package ``vit_zoo``).
``create_model(name)`` builds a registered variant with its variables created, ready for
weights; importing this package imports every family's module, so any zoo ``.keras`` file loads.
"""

from __future__ import annotations

import keras

from zoo.configs import Config, family_of, resolve
from zoo.registry import framework_exports, lazy_exports, model_class

_BASE = ["build_model", "create_model", "load_model"]


def create_model(
    name: str | Config | None = None, *, checkpoint=None, features_only=None, **overrides
) -> keras.Model:
    """The registered variant ``name`` (see ``zoo.registry.VARIANTS``) or the config given (a
    solved one: ``layouts.detect(sd).config``), fields overridden by keyword
    (``dataclasses.replace``), built (its variables exist; spatial sizes stay open, any input
    size runs). An unknown name (or None without ``checkpoint``) raises
    ``zoo.configs.UnknownVariantError``, one line naming the known variants.

    With ``checkpoint`` (a ``.keras`` / ``.weights.h5`` file, a Flax file, any PyTorch
    checkpoint or Hugging Face directory ``weight-convert`` reads) the weights and the
    architecture come from it, as ``zoo.models.create_model`` describes."""
    if checkpoint is None:
        if features_only is not None:
            overrides["features_only"] = features_only
        return build_model(resolve(name, **overrides))
    return load_model(checkpoint, name, features_only=features_only, **overrides)


def load_model(path, name: str | None = None, *, features_only=None, **options) -> keras.Model:
    """The Keras model of the file at ``path`` with its weights, set one variable at a time
    (``create_model(name, checkpoint=path, ...)``)."""
    from weight_convert import loading

    source = loading.read_checkpoint(path, name, features_only=features_only, **options)
    return loading.load_keras(source)


def build_model(config: Config) -> keras.Model:
    """The model ``config`` describes, built: its variables exist, spatial sizes stay open."""
    model = model_class(config, "keras")(config)
    model.build(family_of(config).port_build_shape(config))
    return model


__getattr__, __dir__ = lazy_exports("keras", __name__, globals(), _BASE)


framework_exports("keras")  # every family's classes are registered with Keras for loading
