"""Reading a conversion's source into the reference's state dict: a PyTorch checkpoint of any
registered layout (``weight_convert.layouts``), a Keras ``.keras`` / ``.weights.h5`` file, or a
Flax ``.safetensors`` / ``.msgpack`` file. Tensors of checkpoints and Flax ``.safetensors``
files stay ``LazyTensor``s until written.

Only the frameworks a source needs are imported: a Flax ``.safetensors`` or a PyTorch
``.safetensors`` / ``.pkl`` needs none, a ``.pth`` needs torch, a Keras file Keras, a msgpack
Flax's serialization.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weight_convert import checkpoints, keras_files, layouts, port_files, rules
from weight_convert.errors import (
    CheckpointError,
    ConvertError,
    MissingKeysError,
    ShapeMismatchError,
    UnexpectedKeysError,
    WrongModelError,
    all_lines,
    first_line,
)
from weight_convert.tensors import LazyTensor, check_dtypes
from zoo.configs import (
    VARIANTS,
    Config,
    arch_fields,
    config_from_json,
    config_to_dict,
    family_of,
    match_variant,
    nearest_variant,
    overrides_from,
    reference_shapes,
)

__all__ = ["SOURCES", "Source", "check_variant", "describe", "port_to_reference", "read_source"]

#: what ``read_source`` accepts: a PyTorch checkpoint, a Keras file, a Flax file
SOURCES = ("torch", "keras", "flax")

#: Flax files written by ``ports.flax.serialization.save`` name the model and its config here
_FLAX_METADATA = ("model", "config")


@dataclass
class Source:
    """A file read into the reference's keys.

    ``kind`` is "torch", "keras" or "flax"; ``reference`` the reference model's state dict (its
    keys, in its order, numpy arrays); ``detected`` the layout detection of a PyTorch checkpoint
    (None for Keras / Flax files, whose config is stored in them); ``info`` what the reader found
    (container format, wrappers, metadata); ``model`` the loaded Keras model (``.keras``
    sources; other port files are loaded only for ``--verify``). Values are arrays or
    ``LazyTensor``s.
    """

    path: str
    kind: str
    config: Config
    reference: dict[str, Any]
    detected: layouts.Detected | None
    info: dict[str, Any]
    model: Any = None
    #: reference keys the file lacks, allowed by ``--allow-missing`` (left at initialization)
    missing: list[str] = field(default_factory=list)

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def variant(self) -> str | None:
        if self.detected is not None:
            return self.detected.variant
        return match_variant(self.config)

    @property
    def layout(self) -> str | None:
        """The PyTorch layout of a checkpoint source; None for Keras and Flax files."""
        return None if self.detected is None else self.detected.layout


def port_to_reference(
    values: Mapping[str, Any], config: Config, allow: layouts.Allow = layouts.STRICT
) -> tuple[dict[str, Any], list[str]]:
    """The reference state dict (its keys, in its order) from port variables by dotted path
    (Keras or Flax layout; arrays or ``LazyTensor``s, which stay lazy), and the reference keys
    missing by ``allow``. Strict both ways otherwise: ``MissingKeysError``,
    ``UnexpectedKeysError``, ``ShapeMismatchError``."""
    check_dtypes(values, f"{family_of(config).model} file")
    state: dict[str, Any] = {}
    ports_of: dict[str, str] = {}
    for path, value in values.items():
        key = rules.torch_key(path)
        if key in state:
            raise CheckpointError(f"{ports_of[key]} and {path} both map to {key}")
        ports_of[key] = path
        if isinstance(value, LazyTensor):
            shape = rules.torch_shape(path, value.shape)
            dtype = rules.torch_dtype(path, value.dtype)
            state[key] = value.map(lambda x, path=path: rules.torch_tensor(path, x), shape, dtype)
        else:
            state[key] = rules.torch_tensor(path, np.asarray(value))
    shapes = reference_shapes(config)
    unused = [ports_of[k] for k in state if k not in shapes]
    unused = [p for p in unused if not allow.allows_unused(p, rules.torch_key(p))]
    if unused:
        raise UnexpectedKeysError(unused, f"{family_of(config).model} file")
    unset = [k for k in shapes if k not in state]
    missing = [k for k in unset if allow.allows_missing(k)]
    if len(missing) < len(unset):
        raise MissingKeysError(
            [k for k in unset if k not in missing], f"{family_of(config).model} file"
        )
    for key, shape in shapes.items():
        if key in state and tuple(state[key].shape) != shape:
            raise ShapeMismatchError(
                f"{key}: the file holds shape {tuple(state[key].shape)}, the model needs {shape}"
            )
    return {key: state[key] for key in shapes if key in state}, missing


def _read_keras(path: str, allow: layouts.Allow, variant: str | None) -> Source:
    """A ``.keras`` file or a bare ``.weights.h5``: checked before anything is built
    (``keras_files.checked_weights``: the archive's members and ``config.json``, the HDF5's
    structure, storage and dtypes, shapes that are the config's model's); then the model is
    built from the config (a ``.weights.h5`` names it in its ``vit_zoo_config`` attribute, this
    tool writes it, else ``--variant``) and loads the file."""
    fallback = None if variant is None else VARIANTS[variant].config
    config, dtype = keras_files.checked_weights(path, variant=fallback)
    try:
        values = port_files.load_keras_weights(path, config, dtype)
    except ImportError as e:
        raise CheckpointError(f"reading {path} needs Keras 3 and h5py ({e})") from None
    except ConvertError:
        raise
    except (OSError, ValueError) as e:  # what Keras raises for weights that do not load
        raise WrongModelError(
            f"{path} does not hold {family_of(config).model} weights of this config: {all_lines(e)}"
        ) from None
    kind = "keras" if path.lower().endswith(".keras") else "keras-weights"
    info = {"format": kind, "model": family_of(config).model, "dtype": dtype}
    reference, missing = port_to_reference(values, config, allow)  # already in the stored dtype
    return Source(path, "keras", config, reference, None, info, missing=missing)


def _read_flax_msgpack(path: str, allow: layouts.Allow) -> Source:
    """A Flax msgpack (the nested pure dict of the nnx state): no config inside, so the
    architecture is solved from the variables' paths and shapes."""
    try:
        values = port_files.read_flax_msgpack(path)
    except Exception as e:  # noqa: BLE001 - any failure to unpack is one user-facing error
        raise CheckpointError(
            f"cannot read {path} as a Flax msgpack file (truncated or corrupt?): {first_line(e)}"
        ) from None
    config, notes = port_files.infer_port_config({p: tuple(v.shape) for p, v in values.items()})
    info = {"format": "flax-msgpack", "model": family_of(config).model, "notes": notes}
    reference, missing = port_to_reference(values, config, allow)
    return Source(path, "flax", config, reference, None, info, missing=missing)


def _read_flax(
    path: str, tensors: Mapping[str, LazyTensor], info: dict[str, Any], allow: layouts.Allow
) -> Source:
    metadata = info["metadata"]
    try:
        config = config_from_json(metadata["config"])
    except ValueError as e:  # zoo.config_checks.ConfigError: names the field
        raise CheckpointError(f"{path}: Flax model file with an unreadable config: {e}") from None
    if metadata["model"] != family_of(config).model:
        raise CheckpointError(
            f"{path}: metadata names model {metadata['model']} but a {config.family} config"
        )
    info = {**info, "format": "flax", "model": metadata["model"]}
    reference, missing = port_to_reference(tensors, config, allow)
    return Source(path, "flax", config, reference, None, info, missing=missing)


def read_source(
    path: str | os.PathLike, allow: layouts.Allow = layouts.STRICT, variant: str | None = None
) -> Source:
    """Read ``path`` into the reference's keys: a Keras ``.keras`` file, a Flax ``.safetensors``
    written by this tool (told from a PyTorch ``.safetensors`` by its metadata), or a PyTorch
    checkpoint of a known layout (``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors`` / model-zoo
    ``.pkl``), or a Hugging Face model directory (``config.json`` beside the weights).
    Tensors of checkpoints and Flax files stay ``LazyTensor``s until written.

    Raises the ``weight_convert.errors`` kind of each failure: ``MissingFileError``,
    ``EmptyFileError``, ``NotACheckpointError``, ``WrongFormatError``, ``CheckpointError``
    (truncated / corrupt), ``UnsafePickleError``, ``LayoutError`` (no known layout),
    ``MissingKeysError`` / ``UnexpectedKeysError`` (beyond ``allow``), ``ShapeMismatchError``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):  # a Hugging Face model directory
        tensors, info = checkpoints.open_state_dict(path)
        detected = layouts.detect_directory(tensors, info["config"], allow)
        reference = layouts.to_reference(tensors, detected)
        info = {k: v for k, v in info.items() if k != "config"}
        return Source(
            path, "torch", detected.config, reference, detected, info, missing=detected.missing
        )
    content = checkpoints.sniff(path)
    if content == "hdf5" or (content == "zip" and path.lower().endswith(".keras")):
        return _read_keras(path, allow, variant)
    if content == "msgpack":
        return _read_flax_msgpack(path, allow)
    tensors, info = checkpoints.open_state_dict(path)
    metadata = info.get("metadata") or {}
    if all(k in metadata for k in _FLAX_METADATA):
        return _read_flax(path, tensors, info, allow)
    detected = layouts.detect(tensors, allow)
    reference = layouts.to_reference(tensors, detected)
    return Source(
        path, "torch", detected.config, reference, detected, info, missing=detected.missing
    )


def check_variant(source: Source, variant: str | None) -> None:
    """``WrongModelError`` unless ``source`` has the architecture of ``variant`` (None: any)."""
    if variant is None:
        return
    expected = VARIANTS[variant].config
    got = source.config
    if expected.family != got.family:
        raise WrongModelError(
            f"asked for {variant} ({expected.family}) but the checkpoint is a {got.family} model"
            + (f" ({source.variant})" if source.variant else "")
        )
    diffs = [
        f"{f}={getattr(got, f)} (expected {getattr(expected, f)})"
        for f in arch_fields(expected)
        if getattr(got, f) != getattr(expected, f)
    ]
    if diffs:
        raise WrongModelError(f"checkpoint is not {variant}: " + ", ".join(diffs))


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """What ``weight-convert inspect`` shows of any file ``read_source`` reads: a PyTorch
    checkpoint's layout detection (``layouts.describe``), or for a Keras / Flax file the model
    its config (or, for a msgpack, its shapes) names: family, variant (None for a custom
    architecture), the nearest variant and the overrides that build the config from it, config,
    parameter and tensor counts, dtypes. A Flax ``.safetensors`` is told from a PyTorch one by
    its metadata, as ``convert`` tells it. ``container`` is what the reader found."""
    source = read_source(path)
    if source.kind == "torch":
        tensors, _ = checkpoints.open_state_dict(path)
        out = layouts.describe(source.detected, tensors)
    else:
        values = source.reference.values()
        nearest = source.variant or nearest_variant(source.config)[0]
        out = {
            "source": source.info["format"],
            "family": source.family,
            "variant": source.variant,
            "nearest_variant": nearest,
            "overrides": overrides_from(nearest, source.config),
            "config": config_to_dict(source.config),
            "parameters": int(sum(int(np.prod(v.shape)) for v in values)),
            "tensors": len(source.reference),
            "dtypes": sorted({str(v.dtype) for v in values}),
            "notes": list(source.info.get("notes", [])),
        }
    out["container"] = {k: v for k, v in source.info.items() if k != "notes"}
    return out
