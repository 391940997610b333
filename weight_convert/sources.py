"""Reading a conversion's source into the reference's state dict: a PyTorch checkpoint of any
registered layout (``weight_convert.layouts``), a Keras ``.keras`` / ``.weights.h5`` file, or a
Flax ``.safetensors`` / ``.msgpack`` file. Tensors of checkpoints and Flax ``.safetensors``
files stay ``LazyTensor``s until written.

Only the frameworks a source needs are imported: a Flax ``.safetensors`` or a PyTorch
``.safetensors`` / ``.pkl`` needs none, a ``.pth`` needs torch, a Keras file Keras, a msgpack
Flax's serialization.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weight_convert import checkpoints, layouts, port_files, rules
from weight_convert.errors import (
    CheckpointError,
    MissingKeysError,
    ShapeMismatchError,
    UnexpectedKeysError,
    UsageError,
    WrongFormatError,
    WrongModelError,
    first_line,
)
from weight_convert.tensors import FLOAT_DTYPES, LazyTensor, check_dtypes, is_float
from zoo.configs import (
    VARIANTS,
    Config,
    arch_fields,
    config_from_dict,
    family_of,
    match_variant,
    model_config,
    reference_shapes,
)

__all__ = ["SOURCES", "Source", "check_variant", "port_to_reference", "read_source"]

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
            state[key] = value.map(lambda x, path=path: rules.torch_tensor(path, x), shape)
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


def _read_keras(path: str, allow: layouts.Allow) -> Source:
    try:
        import keras

        import ports.keras.models  # noqa: F401  (registers the serializable classes)
        from weight_convert.frameworks import keras_port
    except ImportError as e:
        raise CheckpointError(f"reading {path} needs Keras 3 ({e})") from None
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # noqa: BLE001 - any failure to load is one user-facing error
        raise CheckpointError(
            f"cannot read {path} as a Keras model (truncated or corrupt?): {first_line(e)}"
        ) from None
    config = model_config(model)
    if config is None:
        raise WrongFormatError(
            f"{path} holds a {type(model).__name__}, not a model of this zoo (ports.keras.models)"
        )
    info = {"format": "keras", "backend": keras.backend.backend(), "model": type(model).__name__}
    reference, missing = port_to_reference(
        _stored_dtype(path, keras_port.read(model)), config, allow
    )
    return Source(path, "keras", config, reference, None, info, model, missing)


def _stored_dtype(path: str, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras loads float16 / bfloat16 weights into float32 variables (exactly): give the values
    back the dtype the file stores them in."""
    stored = port_files.keras_file_dtype(path)
    if stored is None or stored == "float32":
        return values
    return {
        p: v.astype(FLOAT_DTYPES[stored]) if is_float(v.dtype) else v for p, v in values.items()
    }


def _read_keras_weights(path: str, allow: layouts.Allow, variant: str | None) -> Source:
    """A bare ``.weights.h5``: the model is the one its ``vit_zoo_config`` attribute names (this
    tool writes it), else ``--variant``."""
    try:
        config = port_files.read_config_attr(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {path} (truncated or corrupt?): {first_line(e)}"
        ) from None
    if config is None:
        if variant is None:
            raise UsageError(
                f"{path} holds Keras weights without naming their model: give --variant NAME"
            )
        config = VARIANTS[variant].config
    try:
        values = port_files.read_keras_weights_h5(path, config)
    except (OSError, ValueError) as e:
        raise WrongModelError(
            f"{path} does not hold {family_of(config).model} weights of this config: "
            f"{first_line(e)}"
        ) from None
    info = {"format": "keras-weights", "model": family_of(config).model}
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
        config = config_from_dict(json.loads(metadata["config"]))
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: Flax model file with an unreadable config ({e})") from None
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
    ``.pkl``). Tensors of checkpoints and Flax files stay ``LazyTensor``s until written.

    Raises the ``weight_convert.errors`` kind of each failure: ``MissingFileError``,
    ``EmptyFileError``, ``NotACheckpointError``, ``WrongFormatError``, ``CheckpointError``
    (truncated / corrupt), ``UnsafePickleError``, ``LayoutError`` (no known layout),
    ``MissingKeysError`` / ``UnexpectedKeysError`` (beyond ``allow``), ``ShapeMismatchError``.
    """
    path = os.fspath(path)
    content = checkpoints.sniff(path)
    if content == "hdf5":
        return _read_keras_weights(path, allow, variant)
    if content == "zip" and path.endswith(".keras"):
        return _read_keras(path, allow)
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
