"""stderr holds the CLI's own lines only (``weight_convert.quiet``), on the noisiest backend:
``python -m weight_convert`` with ``KERAS_BACKEND=tensorflow`` and no ``TF_CPP_MIN_LOG_LEVEL``
in its environment. TensorFlow prints its absl / oneDNN / CUDA lines from C++ while it is
imported: an error is still exactly one line, a success prints nothing on stderr, and
``--verbose`` shows the rest as ``note:`` lines. Each run imports TensorFlow in a fresh process
(about 5 s)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import checkpoint_factory as factory
import pytest

from weight_convert import errors
from zoo.registry import FAMILIES

SMALL_SWIN = dataclasses.asdict(FAMILIES["swin"].tiny)
#: what TensorFlow's C++ logging and Python's warnings look like on stderr
NOISE = ("absl", "I0000", "W0000", "E0000", "oneDNN", "cuda", "Warning", "Traceback")


def weight_convert(cwd: Path, *argv: object, backend: str = "tensorflow"):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join([str(Path.cwd()), *sys.path])
    return subprocess.run(
        [sys.executable, "-m", "weight_convert", *map(str, argv)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """A good official Swin ``.pth`` converted to Keras: the run, and its folder."""
    root = tmp_path_factory.mktemp("quiet")
    pth = Path(factory.official_swin2d(root / "swin.pth", seed=0, **SMALL_SWIN)[0])
    (root / "out").mkdir()
    return weight_convert(root / "out", "convert", pth, "--to", "keras", "-o", "m"), root / "out"


@pytest.fixture(scope="module")
def warned(good) -> Path:
    """The good ``.keras``: reading it imports TensorFlow, whose import prints its C++ log lines.
    (A member that made ``zipfile`` warn was the Python-level warning here; such a file is now
    refused before Keras reads it, see ``test_bad_port_files.py``.)"""
    return good[1] / "m.keras"


def test_success_on_a_keras_path_leaves_stderr_empty(good):
    proc, out = good
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert "wrote" in proc.stdout and "m.weights.h5" in proc.stdout, proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["m.keras", "m.weights.h5"]


def test_error_on_a_keras_path_is_one_line(warned, tmp_path):
    """Read (TensorFlow imported, the warning given), then refused: not the variant asked."""
    variant = "swin_tiny_patch4_window7_224"
    proc = weight_convert(tmp_path, "convert", warned, "--to", "torch", "--variant", variant)
    assert proc.returncode == errors.WrongModelError.exit_code, proc.stderr
    assert proc.stderr.startswith("weight-convert: error: ") and proc.stderr.count("\n") == 1, (
        proc.stderr
    )
    assert not any(word in proc.stderr for word in NOISE), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_verbose_shows_the_rest_as_notes(warned, tmp_path):
    proc = weight_convert(tmp_path, "convert", warned, "--to", "torch", "-o", "m.pth", "-v")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert all(line.startswith("weight-convert: note: ") for line in lines), proc.stderr
    assert "absl::InitializeLog" in proc.stderr, "TensorFlow's import-time lines were not kept"
    assert "wrote" in proc.stdout and (tmp_path / "m.pth").is_file()


def test_a_framework_that_fails_to_import_is_one_line(good, tmp_path):
    source = good[1].parent / "swin.pth"
    proc = weight_convert(tmp_path, "convert", source, "--to", "keras", backend="nonsense")
    assert proc.returncode == errors.FrameworkError.exit_code, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("weight-convert: error: cannot import keras: "), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
