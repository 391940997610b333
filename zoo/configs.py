"""Framework-free access to configs and variants, for every family alike.

A config is a frozen dataclass defined by its family's spec module (``zoo.families.swin.SwinConfig``
and so on); every framework's model takes one (``SwinTransformer(config)``), so a variant name means
the same architecture in PyTorch, Keras and Flax. Nothing here imports a deep-learning framework,
and nothing here names a family: ``zoo.registry`` knows them.

The config classes are also reachable here by name (``from zoo.configs import SwinConfig``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from zoo.config_checks import ConfigError, check_fields, parse_config_json, validate
from zoo.family import Family, Variant, arch_fields
from zoo.registry import FAMILIES, VARIANTS

__all__ = [
    "VARIANTS",
    "Config",
    "Variant",
    "arch_fields",
    "config_classes",
    "config_from_dict",
    "config_from_json",
    "config_to_dict",
    "families",
    "family_of",
    "is_config",
    "match_variant",
    "model_config",
    "parameter_count",
    "reference_shapes",
    "resolve",
]

#: any family's config dataclass
Config = Any


def family_of(config: Config) -> Family:
    """The family spec of ``config`` (``config.family`` names it)."""
    return FAMILIES[config.family]


def config_classes() -> dict[str, type]:
    """Config class name -> class, over every registered family."""
    return {f.config.__name__: f.config for f in FAMILIES.values()}


def is_config(obj: Any) -> bool:
    """Whether ``obj`` is a config of a registered family."""
    return type(obj) in config_classes().values()


def model_config(model: Any) -> Config | None:
    """The config of ``model`` when it is a family's model (its class is the family's model, in
    any framework), else None."""
    config = getattr(model, "config", None)
    if is_config(config) and type(model).__name__ == family_of(config).model:
        return config
    return None


def reference_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """Every key of the reference model's state dict for ``config`` with its shape, in the
    model's order (``zoo.models.create_model(...).state_dict()``), from the family's table."""
    return family_of(config).shapes(config)


def parameter_count(config: Config) -> int:
    """Number of parameters (and stored buffers) of the model ``config`` describes, no framework
    needed: the sum over ``reference_shapes``."""
    total = 0
    for shape in reference_shapes(config).values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def config_to_dict(config: Config) -> dict[str, Any]:
    """JSON-friendly dict with the class name, for saved models and the CLI."""
    return {"class": type(config).__name__, **dataclasses.asdict(config)}


def config_from_dict(data: dict[str, Any]) -> Config:
    """The config ``config_to_dict`` gave ``data``, checked as strictly as one read from an
    untrusted file must be (``zoo.config_checks``: exact field types, the family's ranges, a
    sane size); ``config_checks.ConfigError`` (a ``ValueError``) names the bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"config is a {type(data).__name__}, not a JSON object")
    data = dict(data)
    name = data.pop("class", None)
    classes = config_classes()
    if not isinstance(name, str) or name not in classes:
        known = ", ".join(sorted(classes))
        raise ConfigError(f"unknown config class {str(name)[:100]!r}; known: {known}")
    cls = classes[name]
    return validate(cls(**check_fields(cls, data)))


def config_from_json(text: str | bytes) -> Config:
    """``config_from_dict`` of JSON text (``config_checks.parse_config_json``: bounded length
    and nesting)."""
    return config_from_dict(parse_config_json(text))


def resolve(name: str, **overrides: Any) -> Config:
    """The config of the registered variant ``name`` with fields replaced by ``overrides``: what
    every framework's ``create_model`` builds (the model class follows the config's family)."""
    return dataclasses.replace(VARIANTS[name].config, **overrides)


def match_variant(config: Config) -> str | None:
    """The registered variant whose architecture (``arch_fields``) equals ``config``'s, or None."""
    for name, v in VARIANTS.items():
        if type(v.config) is type(config) and all(
            getattr(v.config, f) == getattr(config, f) for f in arch_fields(config)
        ):
            return name
    return None


def families() -> dict[str, list[str]]:
    """Family -> variant names."""
    out: dict[str, list[str]] = {name: [] for name in FAMILIES}
    for name, v in VARIANTS.items():
        out[v.config.family].append(name)
    return out


def __getattr__(name: str) -> type:
    classes = config_classes()
    if name in classes:
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
