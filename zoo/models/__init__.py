"""Reference PyTorch models, one module per family (``zoo.registry.FAMILIES``), each taking its
family's config. ``create_model(name)`` builds a registered variant; the model classes and their
parts (``SwinTransformer``, ``Sam``, ``TwoWayTransformer``, ...) are attributes of this package,
as they are of ``ports.keras.models`` and ``ports.flax.models``."""

from __future__ import annotations

from zoo.configs import Config, resolve
from zoo.registry import lazy_exports, model_class

_BASE = ["build_model", "create_model"]


def build_model(config: Config):
    """The reference model ``config`` describes (its family's class), in eval mode."""
    return model_class(config, "torch")(config).eval()


def create_model(name: str, **overrides):
    """The registered variant ``name`` (see ``zoo.registry.VARIANTS``), config fields overridden by
    keyword, in eval mode."""
    return build_model(resolve(name, **overrides))


__getattr__, __dir__ = lazy_exports("torch", __name__, globals(), _BASE)
