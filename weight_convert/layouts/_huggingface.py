"""Hugging Face ``config.json`` <-> the zoo's configs, for the layouts Hugging Face models use.

A layout whose checkpoints are transformers models declares ``LayoutSpec.huggingface`` (an
``HFConfig``): the ``model_type`` of its ``config.json``, how that config gives the zoo's config
fields (``from_hf``) and the ``config.json`` written for a zoo config (``to_hf``). A directory's
config is authoritative for what no tensor shape shows (SAM's decoder heads) and is held to
every shape (``match_layout(..., config_from_file=True)``). Framework-free.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from weight_convert.errors import LayoutError
from zoo.config_checks import ConfigError
from zoo.configs import Config, config_from_dict

__all__ = ["HFConfig", "hf_field", "huggingface_spec", "zoo_config"]

_MISSING = object()


@dataclass(frozen=True)
class HFConfig:
    """``model_type``: what ``config.json`` says; ``from_hf(config, keys) -> {zoo field: value}``
    with the config class's name under ``"class"`` (``zoo.configs.config_from_dict`` checks it;
    ``keys``: the tensors' names, as the key rules see them, for what the file decides, such as
    whether a head is there);
    ``to_hf(config) -> config.json``'s dict, which transformers' ``from_pretrained`` reads."""

    model_type: str
    from_hf: Callable[[Mapping[str, Any], Collection[str]], dict[str, Any]]
    to_hf: Callable[[Config], dict[str, Any]]


def hf_field(config: Mapping[str, Any], name: str, default: Any = _MISSING) -> Any:
    """``config[name]`` (``default`` when absent; ``LayoutError`` when absent without one)."""
    if name in config:
        return config[name]
    if default is _MISSING:
        raise LayoutError(f"config.json has no {name}")
    return default


def require(config: Mapping[str, Any], name: str, supported: Any, default: Any = _MISSING) -> None:
    """``LayoutError`` unless ``config[name]`` (or its transformers default) is ``supported``:
    a setting the zoo's model does not implement is refused, never ignored."""
    value = hf_field(config, name, default)
    if value != supported:
        raise LayoutError(
            f"config.json sets {name}={value!r}; the zoo's model implements {supported!r} only"
        )


def huggingface_spec(model_type: Any):
    """The ``LayoutSpec`` of the Hugging Face layout of ``model_type`` (``LayoutError``: none)."""
    from weight_convert.layouts._registry import all_layouts

    specs = [s for s in all_layouts() if s.huggingface is not None]
    for spec in specs:
        if spec.huggingface.model_type == model_type:
            return spec
    known = ", ".join(s.huggingface.model_type for s in specs)
    raise LayoutError(
        f"config.json has model_type {str(model_type)[:100]!r}; the zoo reads Hugging Face "
        f"models of type {known}"
    )


def zoo_config(spec, config_json: Mapping[str, Any], keys: Collection[str]) -> Config:
    """The zoo config ``config_json`` describes, checked as any config read from a file."""
    try:
        return config_from_dict(spec.huggingface.from_hf(config_json, keys))
    except (ConfigError, TypeError, ValueError) as e:
        if isinstance(e, LayoutError):
            raise
        raise LayoutError(f"config.json does not describe a {spec.family} model: {e}") from None


def detect_directory(tensors: Mapping[str, Any], config_json: Mapping[str, Any], allow=None):
    """``Detected`` of a Hugging Face directory's tensors: the layout its ``config.json``'s
    ``model_type`` names, the config that file describes, held to every tensor's shape."""
    from weight_convert.layouts._detect import STRICT, match_layout

    spec = huggingface_spec(config_json.get("model_type"))
    config = zoo_config(spec, config_json, list(spec.view(tensors)))
    return match_layout(
        tensors, spec.name, spec.family, allow or STRICT, config=config, config_from_file=True
    )


def config_json(config: Config, layout: str) -> dict[str, Any]:
    """The ``config.json`` of ``config`` written in the Hugging Face ``layout``."""
    from weight_convert.layouts._registry import layout_spec

    spec = layout_spec(layout, config.family)
    if spec.huggingface is None:
        raise LayoutError(f"{spec.label} is no Hugging Face layout: it has no config.json")
    return spec.huggingface.to_hf(config)
