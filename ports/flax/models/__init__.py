"""Flax NNX port of ``zoo.models``: the same model names, module trees and configs, channels-last.
One module per family (``zoo.registry.FAMILIES``); each model class registers itself
(``@register_model(family, "flax")``). ``create_model(name)`` builds a registered variant."""

from __future__ import annotations

from flax import nnx

from ports.flax.layers.variables import abstract
from zoo.configs import Config, resolve
from zoo.registry import lazy_exports, model_class

_BASE = ["abstract_model", "build_model", "create_model"]


def build_model(config: Config, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """The model ``config`` describes, in eval mode, parameters initialized from ``rngs``
    (default ``nnx.Rngs(0)``)."""
    model = model_class(config, "flax")(config, rngs=rngs if rngs is not None else nnx.Rngs(0))
    model.eval()
    return model


def create_model(name: str, *, rngs: nnx.Rngs | None = None, **overrides) -> nnx.Module:
    """The registered variant ``name`` (see ``zoo.registry.VARIANTS``), config fields overridden by
    keyword, in eval mode. Parameters are initialized from ``rngs`` (default ``nnx.Rngs(0)``)."""
    return build_model(resolve(name, **overrides), rngs=rngs)


def abstract_model(config: Config, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """The model ``config`` describes with abstract parameters (``nnx.eval_shape``: no random
    initialization, which would compile once per parameter shape), for filling from a file or a
    weight transfer. Its dropout / drop-path streams get concrete keys from ``rngs`` (default
    ``nnx.Rngs(0)``), so once the parameters are set the model runs, jitted or not."""
    cls = model_class(config, "flax")
    return abstract(lambda streams: cls(config, rngs=streams), rngs)


__getattr__, __dir__ = lazy_exports("flax", __name__, globals(), _BASE)
