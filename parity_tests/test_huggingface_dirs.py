"""Hugging Face model directories as the converter reads them: every weight-file arrangement
``save_pretrained`` writes (one safetensors file, safetensors shards with an index, a
``pytorch_model.bin``) gives the same state dict, and a hostile directory is refused by
``weight-convert inspect`` in one line with its exit code, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_checks import one_line
from family_suite import reference_model

from weight_convert import cli, layouts, sources
from weight_convert.frameworks.reference import state_dict
from zoo.registry import FAMILIES


@pytest.fixture(scope="module")
def hf_state():
    """A Swin in the ``huggingface`` layout (random reference weights) and its config.json."""
    config = FAMILIES["swin"].tiny
    reference = state_dict(reference_model(config, seed=5))
    tensors = layouts.from_reference(reference, "huggingface", "swin", config)
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
    return arrays, layouts.config_json(config, "huggingface"), reference


def _write(folder: Path, config: dict | str | bytes | None, files: dict[str, dict]) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        text = config if isinstance(config, (str, bytes)) else json.dumps(config)
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(folder / "config.json", mode) as f:
            f.write(text)
    for name, content in files.items():
        if name.endswith(".json"):
            (folder / name).write_text(json.dumps(content))
        elif name.endswith(".bin"):
            import torch

            torch.save({k: torch.from_numpy(v) for k, v in content.items()}, folder / name)
        else:
            save_file(content, str(folder / name), metadata={"format": "pt"})
    return folder


def _shards(arrays: dict) -> tuple[dict, dict, dict]:
    keys = list(arrays)
    half = len(keys) // 2
    a = {k: arrays[k] for k in keys[:half]}
    b = {k: arrays[k] for k in keys[half:]}
    names = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {k: names[0] if k in a else names[1] for k in keys}}
    return {names[0]: a, names[1]: b}, index, dict(zip(names, (a, b), strict=True))


def test_every_weight_arrangement_reads_the_same(hf_state, tmp_path):
    arrays, config, reference = hf_state
    shards, index, _ = _shards(arrays)
    folders = {
        "single": _write(tmp_path / "single", config, {"model.safetensors": arrays}),
        "sharded": _write(
            tmp_path / "sharded", config, {**shards, "model.safetensors.index.json": index}
        ),
        "bin": _write(tmp_path / "bin", config, {"pytorch_model.bin": arrays}),
    }
    for name, folder in folders.items():
        source = sources.read_source(folder)
        assert (source.layout, source.family) == ("huggingface", "swin"), name
        assert list(source.reference) == list(reference), name
        for key, value in reference.items():
            assert np.array_equal(np.asarray(source.reference[key]), value), (name, key)
    # both safetensors and .bin there (as many Hub repositories): safetensors read, said
    both = _write(tmp_path / "both", config, {"model.safetensors": arrays})
    shutil.copy(folders["bin"] / "pytorch_model.bin", both)
    assert sources.read_source(both).info["notes"] == [
        "read model.safetensors; pytorch_model.bin also there, not read"
    ]


def _hostile(arrays: dict, config: dict):
    """name -> (config.json, files, exit code, message regex)."""
    shards, index, by_name = _shards(arrays)
    first, second = list(by_name)
    key = next(iter(arrays))
    relu = {**config, "hidden_act": "relu"}
    wrong_depths = {**config, "depths": [1, 2]}
    stray = {**index, "weight_map": {k: v for k, v in index["weight_map"].items() if k != key}}
    return {
        "no-config": (None, {"model.safetensors": arrays}, 3, "without config.json"),
        "config-not-json": ("{not json", {"model.safetensors": arrays}, 5, "not JSON"),
        "config-a-list": ("[1, 2]", {"model.safetensors": arrays}, 5, "not an object"),
        "config-too-large": (
            b" " * (16 << 20) + b"{}",
            {"model.safetensors": arrays},
            5,
            "larger than",
        ),
        "no-weights": (config, {}, 6, "no weights"),
        "unknown-model-type": (
            {**config, "model_type": "bert"},
            {"model.safetensors": arrays},
            10,
            "model_type 'bert'",
        ),
        "unsupported-activation": (relu, {"model.safetensors": arrays}, 10, "hidden_act='relu'"),
        "config-contradicts-shapes": (
            wrong_depths,
            {"model.safetensors": arrays},
            13,
            "huggingface/swin checkpoint: 13 unexpected tensor",
        ),
        "index-escapes-folder": (
            config,
            {**shards, "model.safetensors.index.json": {"weight_map": {key: "../x.safetensors"}}},
            5,
            "not a file name here",
        ),
        "index-names-absent-shard": (
            config,
            {first: by_name[first], "model.safetensors.index.json": index},
            5,
            f"names shard {second}, which is not in",
        ),
        "tensor-in-unlisted-shard": (
            config,
            {**shards, "model.safetensors.index.json": stray},
            5,
            "which the index puts in other shards",
        ),
        "index-without-weight-map": (
            config,
            {**shards, "model.safetensors.index.json": {"metadata": {}}},
            5,
            "no weight_map",
        ),
    }


CASES = list(_hostile({"a": np.zeros(1)}, {}))


@pytest.mark.parametrize("case", CASES)
def test_hostile_directories_fail_in_one_line(hf_state, case, tmp_path, capsys):
    arrays, config, _ = hf_state
    text, files, code, message = _hostile(arrays, config)[case]
    folder = _write(tmp_path / case, text, files)
    capsys.readouterr()
    got = cli.main(["inspect", str(folder)])
    one_line(got, capsys.readouterr().err, code, message)


def test_same_tensor_in_two_shards(hf_state, tmp_path, capsys):
    arrays, config, _ = hf_state
    shards, index, by_name = _shards(arrays)
    first, second = list(by_name)
    key = next(iter(by_name[first]))
    doubled = {first: by_name[first], second: {**by_name[second], key: arrays[key]}}
    index["weight_map"][key] = first
    folder = _write(tmp_path / "twice", config, {**doubled, "model.safetensors.index.json": index})
    capsys.readouterr()
    code = cli.main(["inspect", str(folder)])
    one_line(code, capsys.readouterr().err, 5, "which the index puts in other shards")
