"""One-line loading: a model of any framework built from a file the converter reads, its weights
set from it. What ``zoo.models.create_model(checkpoint=...)``, ``ports.keras.models`` and
``ports.flax.models`` (``create_model`` / ``load_model``) call.

``read_checkpoint`` is framework-free: the file is read as ``weight-convert convert`` reads it
(every layout, Hugging Face directories, Keras and Flax files; auto-detected, tensors lazy), the
architecture comes from the file, and the request is checked against it: a variant name must be
the file's architecture, overrides may change only what is not architecture (drop path rates,
the training resolution), and ``features_only=True`` loads a classifier's weights into the
backbone, its head dropped by rule (said in the notes). The loaders then set the model's
variables one tensor at a time, so memory holds the model and one tensor, never the file twice.

Every failure is a ``weight_convert.errors.ConvertError`` (its ``exit_code`` is the CLI's):
``LayoutError``, ``WrongModelError``, ``MissingKeysError``, ... one line each.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from weight_convert import layouts
from weight_convert.errors import UsageError, WrongModelError
from weight_convert.sources import Source, check_variant, read_source
from zoo.config_checks import ConfigError
from zoo.configs import Config, arch_fields, reference_shapes, resolve

__all__ = ["read_checkpoint", "load_keras", "load_flax", "load_torch"]


def _with_config(source: Source, config: Config, notes: list[str]) -> Source:
    shapes = reference_shapes(config)
    dropped = [k for k in source.reference if k not in shapes]
    if dropped:
        notes.append(f"{len(dropped)} tensor(s) of the head dropped for features_only: {dropped}")
    reference = {k: v for k, v in source.reference.items() if k in shapes}
    info = {**source.info, "notes": [*source.info.get("notes", []), *notes]}
    return dataclasses.replace(source, config=config, reference=reference, info=info)


def read_checkpoint(
    path: str | os.PathLike,
    name: str | Config | None = None,
    *,
    features_only: bool | None = None,
    allow_missing: Sequence[str] = (),
    allow_unused: Sequence[str] = (),
    **overrides: Any,
) -> Source:
    """``path`` read into the reference's keys (``sources.read_source``), with the config the
    model is built from: the file's, checked against ``name`` (a variant or a ``Config``: the
    file must have its architecture, ``WrongModelError`` otherwise), ``overrides`` applied (no
    architecture field: ``UsageError``) and, with ``features_only=True``, the classifier head
    dropped. ``features_only=False`` on a file without a head is a ``WrongModelError``."""
    allow = layouts.Allow(tuple(allow_missing), tuple(allow_unused))
    variant = name if isinstance(name, str) else None
    source = read_source(path, allow, variant)
    config = source.config
    if isinstance(name, str):
        check_variant(source, name)
    elif name is not None:
        diffs = [f for f in arch_fields(name) if getattr(name, f) != getattr(config, f)]
        if type(name) is not type(config) or diffs:
            raise WrongModelError(
                f"{path} does not have the architecture of the config given"
                + (
                    f" (differs in {', '.join(diffs)})"
                    if diffs and type(name) is type(config)
                    else ""
                )
            )
        config = name
    fixed = [f for f in overrides if f in arch_fields(config)]
    if fixed:
        raise UsageError(
            f"{', '.join(fixed)}: architecture field(s) of {path}, given by the file; override "
            "only what the weights do not fix (e.g. drop_path_rate)"
        )
    unknown = [f for f in overrides if f not in {x.name for x in dataclasses.fields(config)}]
    if unknown:
        raise UsageError(f"{', '.join(unknown)}: no field of {type(config).__name__}")
    notes: list[str] = []
    if features_only is not None and hasattr(config, "features_only"):
        if features_only is False and config.features_only:
            raise WrongModelError(f"{path} has no classifier head: load it with features_only")
        if features_only and not config.features_only:
            overrides = {**overrides, "features_only": True}
    elif features_only:
        raise UsageError(f"{config.family} models have no features_only form")
    if overrides:
        try:  # resolve: features=[...] as a tuple, checked against the model's outputs
            config = resolve(config, **overrides)
        except ConfigError as e:
            raise UsageError(str(e)) from None
    return _with_config(source, config, notes)


def _values(source: Source, shapes, initialized):
    """Port path -> lazy value in the port's layout (``writers.port_values``: every shape
    checked before anything is read)."""
    from weight_convert.writers import port_values

    return port_values(source, shapes, initialized)


def load_torch(source: Source):
    """The reference model of ``source.config`` with ``source``'s weights, one tensor at a time
    (tensors the file lacks by ``allow_missing`` keep their initialization)."""
    import torch

    from weight_convert.tensors import as_torch_tensor, load, release
    from zoo.models import build_model

    model = build_model(source.config)
    state = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in state.items() if k in reference_shapes(source.config)}
    absent = [k for k in expected if k not in source.reference and k not in source.missing]
    extra = [k for k in source.reference if k not in expected]
    if absent or extra:  # reference_shapes and the model disagree: a defect, not the file's
        raise RuntimeError(f"reference model and its shape table differ: {absent[:3]} {extra[:3]}")
    with torch.no_grad():
        for key, value in source.reference.items():
            if tuple(value.shape) != expected[key]:
                raise WrongModelError(f"{key}: shape {tuple(value.shape)}, model {expected[key]}")
            state[key].copy_(as_torch_tensor(load(value)))
            release(value)
    return model.eval()


def load_keras(source: Source):
    """The Keras model of ``source.config`` with ``source``'s weights, one variable at a time."""
    from weight_convert.frameworks import keras_port
    from weight_convert.tensors import release
    from zoo import compat

    model = keras_port.build_model(source.config, initialize=False)
    targets = keras_port.variables(model)
    planned = _values(
        source,
        {p: tuple(v.shape) for p, v in targets.items()},
        lambda: keras_port.read(keras_port.build_model(source.config)),
    )
    for port_path, (_, value) in planned.items():
        target = targets[port_path]
        target.assign(np.asarray(value.load(), dtype=target.dtype))
        release(value)
    compat.keras_settle(model.variables)
    return model


def load_flax(source: Source, rngs=None):
    """The Flax NNX model of ``source.config`` with ``source``'s weights, one variable at a
    time; built abstractly (no random initialization) unless the file lacks tensors by
    ``allow_missing``. In eval mode."""
    import jax.numpy as jnp

    from ports.flax.models import abstract_model, build_model
    from weight_convert.frameworks import flax_port
    from weight_convert.tensors import release

    model = abstract_model(source.config, rngs=rngs)
    if source.missing:
        model = build_model(source.config, rngs=rngs)
    targets = flax_port.variables(model)
    shapes = {p: tuple(v.get_value().shape) for p, v in targets.items()}
    planned = _values(source, shapes, lambda: flax_port.read(build_model(source.config)))
    for port_path, (_, value) in planned.items():
        target = targets[port_path]
        target.set_value(jnp.asarray(value.load(), dtype=target.get_value().dtype))
        release(value)
    model.eval()
    return model
