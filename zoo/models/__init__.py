"""Reference PyTorch models, one module per family (``zoo.registry.FAMILIES``), each taking its
family's config. ``create_model(name)`` builds a registered variant; the model classes and their
parts (``SwinTransformer``, ``Sam``, ``TwoWayTransformer``, ...) are attributes of this package,
as they are of ``ports.keras.models`` and ``ports.flax.models``."""

from __future__ import annotations

from zoo.configs import Config, resolve
from zoo.registry import lazy_exports, model_class

_BASE = ["build_model", "create_model", "load_model"]


def build_model(config: Config):
    """The reference model ``config`` describes (its family's class), in eval mode."""
    return model_class(config, "torch")(config).eval()


def create_model(
    name: str | Config | None = None, *, checkpoint=None, features_only=None, **overrides
):
    """The registered variant ``name`` (see ``zoo.registry.VARIANTS``) or the config given (a
    solved one: ``layouts.detect(sd).config``), fields overridden by keyword
    (``dataclasses.replace``), in eval mode. An unknown name (or None without ``checkpoint``)
    raises ``zoo.configs.UnknownVariantError``, one line naming the known variants.

    With ``checkpoint`` (any file or Hugging Face directory ``weight-convert`` reads, in any
    layout) the weights come from it and so does the architecture: ``name``, when given, must
    be the file's (``WrongModelError`` otherwise), ``overrides`` may change only what the weights
    do not fix, and ``features_only=True`` loads a classifier's weights into its backbone (the
    head dropped). Failures are ``weight_convert.errors.ConvertError``s, one line each, as the
    CLI reports them (``weight_convert.loading``)."""
    if checkpoint is None:
        if features_only is not None:
            overrides["features_only"] = features_only
        return build_model(resolve(name, **overrides))
    return load_model(checkpoint, name, features_only=features_only, **overrides)


def load_model(path, name: str | None = None, *, features_only=None, **options):
    """The reference model of the file at ``path`` with its weights (``create_model(name,
    checkpoint=path, ...)``); ``allow_missing`` / ``allow_unused`` take the CLI's fnmatch
    patterns."""
    from weight_convert import loading

    source = loading.read_checkpoint(path, name, features_only=features_only, **options)
    return loading.load_torch(source)


__getattr__, __dir__ = lazy_exports("torch", __name__, globals(), _BASE)
