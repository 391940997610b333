"""Every direction the README documents, each in a fresh ``weight-convert`` process: the Keras
ones on the backend of this run (``scripts/test.sh`` runs the Keras tests once per backend), the
others once. Import order is what breaks in a fresh process and nowhere else (TensorFlow first,
then something pulling in triton: SIGSEGV), so these run the installed program, not
``cli.main`` in the test process. Each output is read back and compared bit for bit with the
source."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import checkpoint_factory as factory
import numpy as np
import pytest

from weight_convert import checkpoints
from zoo.registry import FAMILIES


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("directions")
    tiny = dataclasses.asdict(FAMILIES["swin"].tiny)
    return Path(factory.official_swin2d(root / "swin.pth", seed=3, **tiny)[0])


def run(cwd: Path, *args: str) -> None:
    """``weight-convert convert ARGS`` in a fresh process: exit 0, no traceback, no staging
    folder left."""
    proc = subprocess.run(
        [sys.executable, "-m", "weight_convert", "convert", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, f"{' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not list(cwd.glob(".weight-convert-*")), "a staging folder was left"


def same_weights(path: Path, source: Path) -> None:
    got, _ = checkpoints.load_state_dict(path)
    want, _ = checkpoints.load_state_dict(source)
    assert list(got) == list(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.keras
def test_keras_directions_in_fresh_processes(source, tmp_path):
    """PyTorch -> Keras, Keras (.keras) -> Flax, Flax -> Keras, Keras (bare .weights.h5) ->
    PyTorch, each its own process on this run's backend: every Keras reader and writer once (a
    process costs seconds of imports on each of the three backends, and the imports are what
    this test is for); the round trip back is bit-identical."""
    run(tmp_path, str(source), "--to", "keras", "-o", "k")
    run(tmp_path, "k.keras", "--to", "flax", "-o", "f")
    run(tmp_path, "f.safetensors", "--to", "keras", "-o", "k2")
    run(tmp_path, "k2.weights.h5", "--to", "torch", "-o", "round_trip.safetensors")
    same_weights(tmp_path / "round_trip.safetensors", source)


def test_framework_free_directions_in_fresh_processes(source, tmp_path):
    """PyTorch -> Flax (.safetensors and .msgpack), Flax -> PyTorch, PyTorch -> PyTorch in
    another layout and back."""
    run(tmp_path, str(source), "--to", "flax", "-o", "f")
    run(tmp_path, str(source), "--to", "flax", "-o", "f.msgpack")
    run(tmp_path, "f.safetensors", "--to", "torch", "-o", "from_flax.pth")
    run(tmp_path, "f.msgpack", "--to", "torch", "-o", "from_msgpack.pth")
    run(tmp_path, str(source), "--to", "torch", "--layout", "torchvision", "-o", "tv.pth")
    run(tmp_path, "tv.pth", "--to", "torch", "--layout", "official", "-o", "back.pth")
    for name in ("from_flax.pth", "from_msgpack.pth", "back.pth"):
        same_weights(tmp_path / name, source)
