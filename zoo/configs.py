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
from zoo.family import Family, Variant, arch_fields, check_features, head_fields
from zoo.registry import FAMILIES, VARIANTS

__all__ = [
    "VARIANTS",
    "Config",
    "UnknownVariantError",
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
    "nearest_variant",
    "overrides_from",
    "parameter_count",
    "reference_shapes",
    "resolve",
    "same_variants",
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


class UnknownVariantError(KeyError, ValueError):
    """``create_model`` / ``resolve`` of a name no variant has (or of something that is neither a
    name nor a config): one line naming the known variants. A ``KeyError`` as the registry's
    look-up was, and a ``ValueError``; printed without ``KeyError``'s quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def resolve(name_or_config: str | Config, **overrides: Any) -> Config:
    """What every framework's ``create_model`` builds (the model class follows the config's
    family): the config of the registered variant ``name_or_config``, or that config itself (a
    solved one: ``layouts.detect(sd).config``), with fields replaced by ``overrides``.

    Raises ``UnknownVariantError`` (one line, the known variants) for any other name or value.
    """
    if isinstance(overrides.get("features"), list):  # create_model(name, features=[...])
        overrides["features"] = tuple(overrides["features"])
    if is_config(name_or_config):
        return _checked(dataclasses.replace(name_or_config, **overrides))
    if not isinstance(name_or_config, str) or name_or_config not in VARIANTS:
        what = (
            f"unknown variant {name_or_config!r}"
            if isinstance(name_or_config, str) or name_or_config is None
            else f"neither a variant name nor a config: {type(name_or_config).__name__}"
        )
        raise UnknownVariantError(
            f"{what[:200]}; give a variant name or a config (zoo.configs; a checkpoint's: "
            f"layouts.detect(sd).config); known variants: {', '.join(VARIANTS)}"
        )
    return _checked(dataclasses.replace(VARIANTS[name_or_config].config, **overrides))


def _checked(config: Config) -> Config:
    """``config`` once its ``features`` (if any) are names its model returns."""
    check_features(config)
    return config


def _differing(a: Config, b: Config, fields: tuple[str, ...]) -> list[str]:
    return [f for f in fields if getattr(a, f) != getattr(b, f)]


def _ranked(config: Config) -> list[tuple[int, int, str]]:
    """(architecture fields differing, head fields differing, name) of every registered variant
    of ``config``'s family and class, nearest first; ties keep registration order."""
    arch, head = arch_fields(config), head_fields(config)
    ranked = [
        (len(_differing(v.config, config, arch)), len(_differing(v.config, config, head)), name)
        for name, v in VARIANTS.items()
        if type(v.config) is type(config) and v.config.family == config.family
    ]
    return sorted(ranked, key=lambda r: r[:2])  # stable: registration order within a tie


def nearest_variant(config: Config) -> tuple[str, dict[str, Any]]:
    """The registered variant of ``config``'s family nearest to it and the overrides that turn
    it into ``config``: ``resolve(name, **overrides) == config``, so every framework's
    ``create_model(name, **overrides)`` builds exactly ``config``.

    Nearest: fewest differing architecture fields (``arch_fields``), then fewest differing head
    fields (``head_fields``), then registration order. Its name is ``match_variant(config)``'s
    when that is not None. Raises ``UnknownVariantError`` when the family has no variant."""
    ranked = _ranked(config)
    if not ranked:
        raise UnknownVariantError(f"family {config.family!r} has no registered variant")
    name = ranked[0][2]
    return name, overrides_from(name, config)


def overrides_from(name: str, config: Config) -> dict[str, Any]:
    """The fields of ``config`` that differ from variant ``name``'s, with ``config``'s values:
    ``resolve(name, **overrides_from(name, config)) == config``."""
    base = VARIANTS[name].config
    fields = tuple(f.name for f in dataclasses.fields(config))
    return {f: getattr(config, f) for f in _differing(base, config, fields)}


def match_variant(config: Config) -> str | None:
    """The registered variant whose architecture (``arch_fields``) equals ``config``'s, or None.
    Of several, the first whose head (``head_fields``: the classes) equals ``config``'s too, else
    the first registered."""
    ranked = _ranked(config)
    return ranked[0][2] if ranked and ranked[0][0] == 0 else None


def same_variants(config: Config) -> list[str]:
    """Every registered variant whose architecture and head equal ``config``'s, in registration
    order: variants a checkpoint cannot tell apart (they differ in training settings only)."""
    return [name for arch, head, name in _ranked(config) if arch == 0 and head == 0]


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
