"""Conversion in every direction is lossless. PyTorch -> Keras -> Flax -> the same layout, for
every layout of every family, is the shared suite's ``test_round_trip`` (family_suite.py); here
are the other directions (Flax -> Keras -> PyTorch, PyTorch -> PyTorch between layouts, the
msgpack and bare ``.weights.h5`` files in bfloat16) and the framework-free path (a Flax file to a
PyTorch ``.safetensors`` with no deep-learning framework importable), each on one family or two:
every tensor comes back bit-identical (same dtype, same values) except the tensors outside the
model (detectron2's detector heads), which are dropped."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import checkpoint_factory as factory
import numpy as np
import pytest
from family_suite import assert_same_checkpoint

from weight_convert import checkpoints, convert, layouts
from zoo.configs import reference_shapes
from zoo.registry import FAMILIES

TINY = {name: family.tiny for name, family in FAMILIES.items()}

#: (layout, family) -> (file name, writer(path, seed)) of a small checkpoint as that layout's
#: code writes it (peer libraries where installable, else the reference in the layout's keys):
#: the layouts the tests below convert in the directions the shared suite does not
MAKERS = {
    ("official", "swin"): (
        "swin.pth",
        lambda p, s: factory.official_swin2d(p, s, **dataclasses.asdict(TINY["swin"])),
    ),
    ("official", "sam"): ("sam.pth", lambda p, s: factory.official_sam(p, TINY["sam"], s)),
    ("timm", "sam_image_encoder"): (
        "samvit.pth",
        lambda p, s: factory.timm_samvit(p, TINY["sam_image_encoder"], s),
    ),
    ("detectron2", "vitdet"): (
        "vitdet.pkl",
        lambda p, s: factory.detectron2_vitdet(p, TINY["vitdet"], s),
    ),
}
#: tensors a layout's checkpoint holds outside the model: dropped on the way
DROPPED = {("detectron2", "vitdet"): set(factory.DETECTRON2_HEADS)}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[tuple[str, str], str]:
    """(layout, family) -> path of the checkpoint, each written once per module."""
    root = tmp_path_factory.mktemp("layouts")
    return {
        key: make(root / name, seed)[0] for seed, (key, (name, make)) in enumerate(MAKERS.items())
    }


@pytest.mark.keras
def test_flax_keras_back(made, tmp_path):
    """checkpoint -> Flax -> Keras -> PyTorch (the other order): bit-identical. (--verify of
    every step: test_cli_convert.py.)"""
    source = made[("official", "sam")]
    flax_file = convert.convert(source, "flax", tmp_path / "m")[0].outputs[0]
    keras_summary, _ = convert.convert(flax_file, "keras", tmp_path / "m")
    assert keras_summary.detected["source"] == "flax"
    summary, _ = convert.convert(keras_summary.outputs[0], "torch", tmp_path / "back.pth")
    assert summary.detected["source"] == "keras" and summary.layout == "official"
    assert_same_checkpoint(summary.outputs[0], source)


@pytest.mark.keras
@pytest.mark.parametrize("key", [("official", "sam"), ("detectron2", "vitdet")], ids="/".join)
def test_msgpack_and_weights_h5_keep_bfloat16(made, tmp_path, key):
    """The other port formats, in bfloat16: checkpoint -> Flax .msgpack (``--dtype bfloat16``;
    the msgpack holds no config, the architecture is solved from its shapes) -> Keras, read
    back from the bare .weights.h5 (its config attribute names the model) -> the layout: the
    source's tensors cast to bfloat16, bit for bit, still bfloat16."""
    from weight_convert.tensors import BFLOAT16, is_float

    layout, _ = key
    source = made[key]
    msgpack = tmp_path / "m.msgpack"
    convert.convert(source, "flax", msgpack, dtype="bfloat16")
    keras_summary, _ = convert.convert(msgpack, "keras", tmp_path / "k")
    assert keras_summary.detected["source"] == "flax"
    back = tmp_path / "back.safetensors"
    summary, _ = convert.convert(tmp_path / "k.weights.h5", "torch", back, layout=layout)
    assert summary.detected["source"] == "keras"
    got, _ = checkpoints.load_state_dict(back)
    want, _ = checkpoints.load_state_dict(source)
    assert set(want) - set(got) == DROPPED.get(key, set())
    for name, value in got.items():
        expected = want[name].astype(BFLOAT16) if is_float(want[name].dtype) else want[name]
        assert value.dtype == expected.dtype, name
        assert np.array_equal(value.view(np.uint8), expected.view(np.uint8)), name


def test_torch_layout_to_layout(made, tmp_path):
    """official -> torchvision -> timm -> official (2D Swin), verified tensor by tensor; the
    official layout's derived buffers (relative_position_index, attn_mask) are rebuilt."""
    source = made[("official", "swin")]
    current = source
    for i, layout in enumerate(["torchvision", "timm", "official"]):
        out = tmp_path / f"{i}_{layout}.pth"
        summary, report = convert.convert(current, "torch", out, layout=layout, verify=True)
        assert summary.layout == layout and report.passed
        assert len(report.layers) == len(reference_shapes(TINY["swin"]))
        sd, _ = checkpoints.load_state_dict(out)
        assert layouts.detect(sd).layout == layout
        current = str(out)
    assert_same_checkpoint(current, source)


def test_flax_to_torch_safetensors_imports_no_framework(made, tmp_path):
    """A Flax file becomes a PyTorch-layout .safetensors (timm samvit) in a process where torch,
    TensorFlow, Keras, JAX and Flax cannot be imported; the result equals the original."""
    source = made[("timm", "sam_image_encoder")]
    flax_file = convert.convert(source, "flax", tmp_path / "m")[0].outputs[0]
    out = tmp_path / "samvit.safetensors"
    code = (
        "import sys\n"
        "for name in ('torch', 'tensorflow', 'keras', 'jax', 'flax'):\n"
        "    sys.modules[name] = None\n"
        "from weight_convert.cli import main\n"
        f"sys.exit(main(['convert', {flax_file!r}, '--to', 'torch', '-o', {str(out)!r},"
        " '--json']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["detected"]["source"], summary["layout"]) == ("flax", "timm")
    assert_same_checkpoint(str(out), source)
    _, info = checkpoints.load_state_dict(out)
    assert info["metadata"] == {"format": "pt"}  # a PyTorch file, not taken for a Flax one
