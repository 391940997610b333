"""Strict checks of a config read from a file, before anything is built from it. Framework-free.

A config that comes from a file (a ``.keras``'s ``config.json``, a ``.weights.h5``'s
``vit_zoo_config`` attribute, a Flax ``.safetensors``'s metadata) is untrusted: a field of the
wrong type, out of range, or describing a model of absurd size must fail here with one line
naming the field (``ConfigError``), never deep inside a framework (a TypeError, a segfault,
gigabytes allocated). Three layers, cheapest first:

- ``parse_config_json``: bounded text, bounded nesting (no ``RecursionError``), an object.
- ``check_fields``: every field of the exact type its dataclass declares (``int`` is no float,
  bool or str; a ``tuple[int, int]`` a list of two ints), ints within ``[0, MAX_INT]``, floats
  finite, tuples at most ``MAX_ITEMS`` long.
- ``validate``: the family's own rules (``Family.validate``: positive sizes, heads dividing
  dims, known window rules, block counts within ``MAX_BLOCKS`` so that the family's shape table
  stays cheap), then the size the config implies: at most ``MAX_TENSORS`` tensors and
  ``MAX_PARAMETERS`` parameters (``zoo.configs.reference_shapes``).

Whether the file's tensors are the model its config claims is the reader's to check next
(``weight_convert``), from the shapes alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Iterable
from typing import Any

__all__ = [
    "MAX_BLOCKS",
    "MAX_CONFIG_CHARS",
    "MAX_INT",
    "MAX_ITEMS",
    "MAX_PARAMETERS",
    "MAX_TENSORS",
    "ConfigError",
    "blocks",
    "check_fields",
    "divides",
    "in_range",
    "mlp_hidden",
    "parse_config_json",
    "positive",
    "validate",
]

#: the longest config text read (a real one is under 1 kB)
MAX_CONFIG_CHARS = 1 << 16
#: the largest int any field may hold (sizes, counts, resolutions; 2^20 is far beyond any)
MAX_INT = 1 << 20
#: the longest tuple any field may hold
MAX_ITEMS = 1024
#: the most transformer blocks a config may describe (the largest variant has 32)
MAX_BLOCKS = 1024
#: the most tensors and parameters a config may imply (SAM ViT-H: 594 and 6.4e8)
MAX_TENSORS, MAX_PARAMETERS = 100_000, 1 << 32


class ConfigError(ValueError):
    """A config that no model of this zoo can be built from; the message names the field."""


def parse_config_json(text: str | bytes) -> dict[str, Any]:
    """The JSON object of a config: at most ``MAX_CONFIG_CHARS`` long, nested no deeper than
    Python's parser can go (``ConfigError`` for both, and for text that is no JSON object)."""
    if len(text) > MAX_CONFIG_CHARS:
        raise ConfigError(f"config of {len(text)} characters (at most {MAX_CONFIG_CHARS})")
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError("config JSON nested too deeply") from None
    except (ValueError, TypeError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"config is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config is a JSON {type(data).__name__}, not an object")
    return data


def _kind(value: Any) -> str:
    return "a bool" if isinstance(value, bool) else f"{type(value).__name__} {value!r:.40}"


def _check_scalar(name: str, hint: Any, value: Any) -> None:
    if hint is bool:
        if type(value) is not bool:
            raise ConfigError(f"config field {name}: expected true or false, got {_kind(value)}")
    elif hint is int:
        if type(value) is not int:
            raise ConfigError(f"config field {name}: expected an integer, got {_kind(value)}")
        if not 0 <= value <= MAX_INT:
            raise ConfigError(f"config field {name}: {value} is outside [0, {MAX_INT}]")
    elif hint is float:
        if type(value) not in (int, float):
            raise ConfigError(f"config field {name}: expected a number, got {_kind(value)}")
        if not math.isfinite(value) or abs(value) > MAX_INT:
            raise ConfigError(f"config field {name}: {value} is not a finite number of sane size")
    elif hint is str:
        if type(value) is not str or len(value) > 100:
            raise ConfigError(f"config field {name}: expected a short string, got {_kind(value)}")
    else:  # pragma: no cover - a config class declaring a type this check does not know
        raise TypeError(f"config field {name}: no check for type {hint}")


def _check_value(name: str, hint: Any, value: Any) -> None:
    if typing.get_origin(hint) is not tuple:
        _check_scalar(name, hint, value)
        return
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config field {name}: expected a list, got {_kind(value)}")
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(value)
        if len(value) > MAX_ITEMS:
            raise ConfigError(f"config field {name}: {len(value)} items (at most {MAX_ITEMS})")
    if len(value) != len(args):
        raise ConfigError(f"config field {name}: expected {len(args)} items, got {len(value)}")
    for i, (item_hint, item) in enumerate(zip(args, value, strict=True)):
        _check_scalar(f"{name}[{i}]", item_hint, item)


def check_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (field -> value, from JSON) checked against the types ``cls`` declares, lists
    made tuples: the keyword arguments of ``cls``. ``ConfigError`` for an unknown field or a
    value of another type or out of the generic bounds."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(unknown)[:200]}")
    out = {}
    for name, value in data.items():
        _check_value(name, hints[name], value)
        out[name] = _as_declared(hints[name], value)
    return out


def _as_declared(hint: Any, value: Any) -> Any:
    """A checked value as its field holds it: lists as tuples, ints of float fields as floats."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        return tuple(float(v) if float in args else v for v in value)
    return float(value) if hint is float else value


# --------------------------------------------------------------------------- for the families


def positive(config: Any, *names: str) -> None:
    """Each named field (a number or a tuple of numbers) above 0."""
    for name in names:
        value = getattr(config, name)
        for v in value if isinstance(value, tuple) else (value,):
            if v <= 0:
                raise ConfigError(f"config field {name}: {value} must be positive")


def in_range(config: Any, name: str, low: float, high: float, *, open_high: bool = False) -> None:
    """Every value of the named field (a number or a tuple of numbers) in ``[low, high]``
    (``[low, high)`` with ``open_high``)."""
    value = getattr(config, name)
    for v in value if isinstance(value, tuple) else (value,):
        if not (low <= v < high if open_high else low <= v <= high):
            right = ")" if open_high else "]"
            raise ConfigError(f"config field {name}: {value} is outside [{low}, {high}{right}")


def divides(what: str, heads: int, dims: Iterable[int] | int) -> None:
    """``heads`` divides every one of ``dims`` (a head count and the widths it splits)."""
    for dim in dims if isinstance(dims, Iterable) else (dims,):
        if dim % heads:
            raise ConfigError(f"config field {what}: {heads} does not divide the width {dim}")


def mlp_hidden(config: Any, width: int) -> None:
    """``config.mlp_ratio`` in (0, 64] and giving an MLP at least 1 wide at ``width``."""
    in_range(config, "mlp_ratio", 0, 64)
    if int(width * config.mlp_ratio) < 1:
        raise ConfigError(f"config field mlp_ratio: {config.mlp_ratio} gives an MLP 0 wide")


def blocks(config: Any, depth: str, indexes: str) -> None:
    """``depth`` blocks, 1 to ``MAX_BLOCKS``, and ``indexes`` distinct block indexes."""
    count, chosen = getattr(config, depth), getattr(config, indexes)
    if not 1 <= count <= MAX_BLOCKS:
        raise ConfigError(f"config field {depth}: {count} blocks (1 to {MAX_BLOCKS})")
    if len(set(chosen)) != len(chosen) or any(i >= count for i in chosen):
        raise ConfigError(f"config field {indexes}: {chosen} are not distinct blocks < {count}")


def validate(config: Any) -> Any:
    """``config`` if a model can be built from it: the family's rules (``Family.validate``),
    then at most ``MAX_TENSORS`` tensors and ``MAX_PARAMETERS`` parameters. ``ConfigError``
    otherwise."""
    from zoo.configs import family_of, reference_shapes
    from zoo.family import check_features

    family = family_of(config)
    if family.validate is not None:
        family.validate(config)
    check_features(config)
    shapes = reference_shapes(config)
    count = sum(math.prod(s) for s in shapes.values())
    if len(shapes) > MAX_TENSORS or count > MAX_PARAMETERS:
        raise ConfigError(
            f"config describes a {family.model} of {len(shapes)} tensors and {count:,} "
            f"parameters (at most {MAX_TENSORS} and {MAX_PARAMETERS:,})"
        )
    return config
