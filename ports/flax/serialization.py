"""Save and load Flax NNX models as ``.safetensors`` files.

The file holds every ``nnx.Param`` and ``Buffer`` under its dotted nnx path
(``layers.0.blocks.1.attn.qkv.kernel``) in the port's layout, and in the safetensors metadata the
model class name (``model``), the config as JSON (``config``, from ``zoo.configs.config_to_dict``)
and ``format``. ``load`` rebuilds the model from the metadata alone. Only NumPy and
safetensors.numpy are used here (no torch, no TensorFlow).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from ports.flax.layers.variables import CHECKPOINT_VARIABLES
from zoo.configs import config_from_json, config_to_dict

__all__ = ["FORMAT", "CheckpointMismatchError", "load", "load_weights", "read_metadata", "save"]

FORMAT = "ports.flax/1"


class CheckpointMismatchError(ValueError):
    """The file's arrays do not match the model's parameters (names or shapes)."""

    def __init__(
        self,
        path: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[str],
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {', '.join(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {', '.join(mismatched)}")
        super().__init__(f"{path}: " + "; ".join(parts))


def _params(model: nnx.Module) -> dict[str, nnx.Variable]:
    return {
        ".".join(str(p) for p in path): v
        for path, v in nnx.iter_graph(model)
        if isinstance(v, CHECKPOINT_VARIABLES)
    }


def save(model: nnx.Module, path: str | os.PathLike) -> None:
    """Write ``model``'s parameters and config to ``path`` atomically (a temporary file in the same
    directory, renamed over ``path`` once complete)."""
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no `config`; only zoo models can be saved")
    params = _params(model)
    tensors = {
        k: np.require(np.asarray(v.get_value()), requirements="C") for k, v in params.items()
    }
    metadata = {
        "format": FORMAT,
        "model": type(model).__name__,
        "config": json.dumps(config_to_dict(config)),
    }
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The file's metadata; raises ``ValueError`` unless it names a model and a config."""
    with safe_open(os.fspath(path), framework="numpy") as f:
        metadata = dict(f.metadata() or {})
    missing = [k for k in ("model", "config") if k not in metadata]
    if missing:
        raise ValueError(
            f"{os.fspath(path)}: not a ports.flax model file (metadata lacks {', '.join(missing)})"
        )
    return metadata


def load_weights(model: nnx.Module, path: str | os.PathLike) -> None:
    """Assign the file's arrays to ``model``'s parameters, strict both ways: any missing or
    unexpected key or shape mismatch raises ``CheckpointMismatchError`` and changes nothing."""
    path = os.fspath(path)
    targets = _params(model)
    with safe_open(path, framework="numpy") as f:
        arrays: Mapping[str, np.ndarray] = {k: f.get_tensor(k) for k in f.keys()}
    missing = sorted(set(targets) - set(arrays))
    unexpected = sorted(set(arrays) - set(targets))
    shapes = {k: tuple(v.get_value().shape) for k, v in targets.items()}
    mismatched = sorted(
        f"{k} (file {tuple(arrays[k].shape)}, model {shapes[k]})"
        for k in set(targets) & set(arrays)
        if tuple(arrays[k].shape) != shapes[k]
    )
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(path, missing, unexpected, mismatched)
    for k, target in targets.items():
        target.set_value(jnp.asarray(arrays[k], dtype=target.get_value().dtype))


def load(path: str | os.PathLike, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """The model saved at ``path``, rebuilt from its metadata, in eval mode. ``rngs`` seeds the
    dropout streams (default ``nnx.Rngs(0)``).

    The model is built abstractly (``nnx.eval_shape``: no random initialization, which would cost
    a compilation per parameter shape), then every parameter is set from the file.
    """
    from ports.flax.models import abstract_model

    metadata = read_metadata(path)
    config = config_from_json(metadata["config"])  # checked: types, ranges, size
    model = abstract_model(config, rngs=rngs)  # dropout / drop-path streams get concrete keys
    load_weights(model, path)
    abstract = [
        ".".join(str(p) for p in path)
        for path, v in nnx.iter_graph(model)
        if isinstance(v, nnx.Variable) and isinstance(v.get_value(), jax.ShapeDtypeStruct)
    ]
    if abstract:  # a variable type this loader does not know how to fill
        raise TypeError(f"{type(model).__name__}: variables left unset: {', '.join(abstract)}")
    model.eval()
    return model
