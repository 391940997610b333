"""Hugging Face model directories, as ``save_pretrained`` writes them and the Hub serves them:
``config.json`` beside the weights, one file (``model.safetensors``, ``pytorch_model.bin``) or
shards named by an index (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``).

``open_directory`` reads one into a flat dict of ``LazyTensor``s (every shard through the
readers of ``weight_convert.checkpoints``, so the same checks and streaming apply) and the
parsed ``config.json``; ``write_directory`` writes ``model.safetensors`` (streamed) and
``config.json``, both or neither. Framework-free; a ``.bin`` shard needs torch, as any ``.bin``.

Nothing in a directory is trusted: ``config.json`` and an index are read with a size bound and
parsed strictly, an index may name only plain file names in the directory, each tensor must be
in the shard the index names, and no tensor may come twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from weight_convert.errors import CheckpointError, MissingFileError, NotACheckpointError
from weight_convert.tensors import LazyTensor

__all__ = ["CONFIG", "WEIGHTS", "is_directory", "open_directory", "read_config"]

CONFIG = "config.json"
#: weight files in the order transformers prefers them: (single file, index of shards)
WEIGHTS = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)
#: the largest config.json or index read (a weight map of tens of thousands of tensors, or the
#: labels of 21k classes, are a few MiB)
MAX_INDEX_BYTES = 16 << 20


def is_directory(path: str | os.PathLike) -> bool:
    return os.path.isdir(path)


def _read_bounded(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > limit:
        raise CheckpointError(f"{path} is larger than {limit:,} bytes: not a model directory's")
    return data


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The directory's ``config.json`` as a dict (``CheckpointError``: absent, too large, not a
    JSON object)."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise MissingFileError(
            f"{directory} is a directory without {CONFIG}: give a checkpoint file, or a "
            "Hugging Face model directory (config.json and its weights)"
        )
    text = _read_bounded(path, MAX_INDEX_BYTES)  # id2label of 21k classes: a few MiB
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path} is not JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is a JSON {type(data).__name__}, not an object")
    return data


def _shard(directory: Path, name: Any, index: Path) -> Path:
    if (
        not isinstance(name, str)
        or not name
        or os.path.basename(name) != name
        or name in (".", "..")
    ):
        raise CheckpointError(f"{index} names shard {str(name)[:100]!r}: not a file name here")
    path = directory / name
    if not path.is_file():
        raise CheckpointError(f"{index} names shard {name}, which is not in {directory}")
    return path


def _read_index(directory: Path, index: Path) -> dict[str, list[str]]:
    """Shard file -> the tensors the index puts there."""
    text = _read_bounded(index, MAX_INDEX_BYTES)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{index} is not JSON ({type(e).__name__})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index} has no weight_map of tensor names to shard files")
    shards: dict[str, list[str]] = {}
    for key, name in weight_map.items():
        _shard(directory, name, index)
        shards.setdefault(name, []).append(key)
    return shards


def open_directory(
    directory: str | os.PathLike, open_file
) -> tuple[dict[str, LazyTensor], dict[str, Any]]:
    """The tensors of a Hugging Face model directory (lazy) and ``info``: ``format``
    "huggingface", ``config`` (the parsed ``config.json``), ``files`` (the weight files read)
    and ``notes``. ``open_file(path)`` opens one weight file (``checkpoints.open_state_dict``
    for a file)."""
    directory = Path(directory)
    config = read_config(directory)
    notes: list[str] = []
    for single, index in WEIGHTS:
        if (directory / single).is_file():
            files, shards = [directory / single], None
            break
        if (directory / index).is_file():
            shards = _read_index(directory, directory / index)
            files = [directory / name for name in shards]
            break
    else:
        wanted = ", ".join(f"{a} or {b}" for a, b in WEIGHTS)
        raise NotACheckpointError(f"{directory} holds {CONFIG} but no weights ({wanted})")
    others = [a for a, b in WEIGHTS if a != files[0].name and (directory / a).is_file()]
    if others:
        notes.append(f"read {files[0].name}; {', '.join(others)} also there, not read")
    tensors: dict[str, LazyTensor] = {}
    where: dict[str, str] = {}
    for path in files:
        found, _ = open_file(path)
        if shards is not None:
            listed = set(shards[path.name])
            stray = [k for k in found if k not in listed]
            if stray:
                raise CheckpointError(
                    f"{path.name} holds {stray[:3]}, which the index puts in other shards"
                )
        for key, value in found.items():
            if key in tensors:
                raise CheckpointError(f"{key} is in both {where[key]} and {path.name}")
            tensors[key] = value
            where[key] = path.name
    if shards is not None:
        absent = [k for names in shards.values() for k in names if k not in tensors]
        if absent:
            raise CheckpointError(f"the index names {absent[:3]}, not in their shards")
    info = {
        "format": "huggingface",
        "wrapper": None,
        "stripped_prefix": None,
        "config": config,
        "files": [p.name for p in files],
    }
    if notes:
        info["notes"] = notes
    return tensors, info


def config_text(config: Mapping[str, Any]) -> str:
    """``config.json``'s text as ``save_pretrained`` writes it (sorted keys, indent 2)."""
    return json.dumps(dict(config), indent=2, sort_keys=True) + "\n"
