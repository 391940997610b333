"""``weight-convert convert / inspect / list`` on checkpoints made here in the official layouts
(torchvision, timm and segment-anything from their own code, the official Video Swin / Swin and
detectron2 ViTDet layouts from the reference through ``layouts.from_reference``): the written
files verify against the reference, Keras and Flax files convert back to PyTorch layouts and
verify against their source, and user mistakes give one line and their exit code (every bad
input: test_bad_inputs)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import checkpoint_factory as factory
import pytest
import torch

from weight_convert import cli, errors
from zoo.registry import FAMILIES

SMALL_CLIP = "1x3x4x64x64"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {
        "torchvision_swin3d": factory.torchvision_swin3d(root / "swin3d_t.pth", seed=1)[0],
        "official_video_swin": factory.official_video_swin(
            root / "video_swin_official.pth", seed=2, depths=(2, 2, 2, 2)
        )[0],
        "timm_swin": factory.timm_swin2d(root / "swin_tiny_timm.pth", seed=3)[0],
    }


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys):
    code, out, _ = run(capsys, "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["swin_tiny_patch4_window7_224"]["parameters"] == 28_288_354  # torchvision swin_t
    assert rows["video_swin_tiny"]["parameters"] == 28_158_070  # torchvision swin3d_t
    assert {"swin_large_patch4_window12_384", "video_swin_large"} <= set(rows)


def test_inspect_torchvision_video(capsys, ckpts):
    code, out, _ = run(capsys, "inspect", ckpts["torchvision_swin3d"], "--json")
    info = json.loads(out)
    assert code == 0
    assert (info["layout"], info["family"], info["variant"]) == (
        "torchvision",
        "video_swin",
        "video_swin_tiny",
    )
    assert info["parameters"] == 28_158_070
    code, out, _ = run(capsys, "inspect", ckpts["torchvision_swin3d"])
    assert code == 0 and "video_swin_tiny" in out


def test_inspect_names_the_sthv2_release(capsys, tmp_path):
    """``inspect`` of a Something-Something v2 release without index buffers (zero-stride
    tensors: shapes only, a small file): window 16 x 7 x 7 from its 5239 bias-table rows, 174
    classes, the release's variant."""
    from zoo.configs import VARIANTS, reference_shapes

    name = "video_swin_base_patch244_window1677_sthv2"
    shapes = reference_shapes(VARIANTS[name].config)
    zeros = {k: torch.zeros(()).expand(s) for k, s in shapes.items()}
    path = factory.save(tmp_path / "sthv2.pth", {"meta": {}, "state_dict": zeros})
    code, out, _ = run(capsys, "inspect", path, "--json")
    info = json.loads(out)
    assert code == 0
    assert (info["layout"], info["variant"], info["nearest_variant"]) == ("official", name, name)
    assert info["overrides"] == {}
    assert info["config"]["window_size"] == [16, 7, 7] and info["config"]["num_classes"] == 174
    assert "window (16, 7, 7) solved from the bias-table rows" in info["notes"]


def test_inspect_names_the_nearest_variant(capsys, ckpts):
    """A custom architecture (Video Swin-T with depths 2, 2, 2, 2) names no variant but its
    nearest and the overrides that build it, in the JSON and the printout."""
    from zoo.configs import config_from_dict, resolve

    code, out, _ = run(capsys, "inspect", ckpts["official_video_swin"], "--json")
    info = json.loads(out)
    assert code == 0
    assert (info["variant"], info["nearest_variant"]) == (None, "video_swin_tiny")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in info["overrides"].items()}
    assert overrides == {"depths": (2, 2, 2, 2), "drop_path_rate": 0.2}
    assert resolve(info["nearest_variant"], **overrides) == config_from_dict(info["config"])
    code, out, _ = run(capsys, "inspect", ckpts["official_video_swin"])
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert code == 0 and lines["variant"].startswith("none: a custom architecture")
    assert lines["nearest_variant"] == "video_swin_tiny"
    assert lines["overrides"] == "depths=(2, 2, 2, 2), drop_path_rate=0.2"


@pytest.mark.parametrize(
    ("source", "target", "shape"),
    [
        ("torchvision_swin3d", "flax", SMALL_CLIP),
        pytest.param("timm_swin", "keras", "1x3x96x128", marks=pytest.mark.keras),
    ],
)
def test_convert_verify(capsys, ckpts, tmp_path, source, target, shape):
    """Full-size checkpoints (torchvision's swin3d_t, timm's swin_tiny) with ``--json``: every
    family's tiny config converts with ``--verify`` to every target in the shared suite."""
    out_stem = tmp_path / "converted"
    code, out, err = run(
        capsys,
        "convert",
        ckpts[source],
        "--to",
        target,
        "-o",
        str(out_stem),
        "--verify",
        "--verify-shape",
        shape,
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["passed"] and summary["verify"]["passed"]
    assert summary["verify"]["layers"], "verification compared no layers"
    assert summary["verify"]["unmatched"] == []
    suffixes = {"keras": [".keras", ".weights.h5"], "flax": [".safetensors"]}[target]
    assert summary["outputs"] == [str(tmp_path / f"converted{s}") for s in suffixes]
    for path in summary["outputs"]:
        assert (tmp_path / path).stat().st_size > 1_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"converted{s}" for s in suffixes)


def test_convert_table_and_progress(capsys, ckpts, tmp_path):
    code, out, err = run(
        capsys,
        "convert",
        ckpts["official_video_swin"],
        "--to",
        "flax",
        "-o",
        str(tmp_path / "v"),
        "--verify",
        "--verify-shape",
        SMALL_CLIP,
        "--progress",
    )
    assert code == 0, err
    assert "layout:   official" in out and "PASS" in out
    assert "backbone.layers.3.blocks.1.mlp" in out  # the per-layer table
    assert "write" in err and "tensors" in err  # the progress bar went to stderr


def test_unknown_variant_is_a_usage_error(capsys, ckpts, tmp_path):
    code, _, err = run(
        capsys, "convert", ckpts["timm_swin"], "--to", "flax", "--variant", "swin_huge"
    )
    assert code == cli.EXIT_USAGE and "weight-convert list" in err


def test_verify_shape_is_any_rank_the_family_checks_it(capsys, ckpts, tmp_path):
    """``--verify-shape`` parses any number of positive sizes; a rank, channel count (or, for
    SAM, size) the model does not take is a usage error (exit 2, one line) found by the family's
    own input checks before anything is written."""
    assert cli._shape("2x197x768") == (2, 197, 768)
    assert cli._shape("1,3,8,64,64") == (1, 3, 8, 64, 64)
    for bad in ("1x3x0x64", "1x3xAx64"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli._shape(bad)
    out = tmp_path / "m"
    cases = (
        ("timm_swin", "1x3x4x64x64", "B x C x H x W"),
        ("timm_swin", "3x64x64", "B x C x H x W"),
        ("timm_swin", "1x4x64x64", "4 channels on axis 1, the model has in_chans=3"),
        ("official_video_swin", "1x3x64x64", "B x C x T x H x W"),
    )
    for source, shape, expected in cases:
        argv = ["convert", ckpts[source], "--to", "flax", "-o", str(out), "--verify"]
        code, _, err = run(capsys, *argv, "--verify-shape", shape)
        assert code == cli.EXIT_USAGE, err
        assert (
            err.startswith(f"weight-convert: error: --verify-shape {shape}: ")
            and err.count("\n") == 1
        )
        assert expected in err
    assert list(tmp_path.iterdir()) == []


def test_console_entry_point_runs():
    """``python -m weight_convert`` is the same program (exit code and one-line error)."""
    proc = subprocess.run(
        [sys.executable, "-m", "weight_convert", "inspect", "/nonexistent/ckpt.pth"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == errors.MissingFileError.exit_code
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- SAM, samvit, ViTDet


@pytest.fixture(scope="module")
def vit_ckpts(tmp_path_factory):
    """Tiny SAM (segment-anything's own model) and detectron2 ViTDet checkpoints."""
    root = tmp_path_factory.mktemp("vit_ckpts")
    return {
        "official_sam": factory.official_sam(root / "sam.pth", FAMILIES["sam"].tiny, seed=4)[0],
        "timm_samvit": factory.timm_samvit(
            root / "samvit.pth", FAMILIES["sam_image_encoder"].tiny, seed=5
        )[0],
        "detectron2_vitdet": factory.detectron2_vitdet(
            root / "vitdet.pkl", FAMILIES["vitdet"].tiny, seed=6
        )[0],
    }


def test_unknown_layout_for_the_family(vit_ckpts, tmp_path):
    """``--layout`` that the family lacks: exit 2, one line naming the family's layouts, no
    output. (A .pkl source needs no framework: the subprocess starts fast.)"""
    out = tmp_path / "m.pth"
    proc = subprocess.run(
        [sys.executable, "-m", "weight_convert", "convert", vit_ckpts["detectron2_vitdet"]]
        + ["--to", "torch", "--layout", "official", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == cli.EXIT_USAGE
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "'official'" in proc.stderr and "vitdet has: detectron2" in proc.stderr
    assert not out.exists()


def test_layout_usage_errors(capsys, vit_ckpts, tmp_path):
    """``--layout`` without ``--to torch`` and a ``.pkl`` output outside the detectron2 layout
    are usage errors (exit 2, one line); nothing is written."""
    sam = vit_ckpts["official_sam"]
    code, _, err = run(capsys, "convert", sam, "--to", "flax", "--layout", "official")
    assert code == cli.EXIT_USAGE and err.count("\n") == 1 and "--to torch" in err
    code, _, err = run(capsys, "convert", sam, "--to", "torch", "-o", str(tmp_path / "m.pkl"))
    assert code == cli.EXIT_USAGE and err.count("\n") == 1 and "detectron2" in err
    assert list(tmp_path.iterdir()) == []


def test_verify_shape_sam_needs_its_image_size(capsys, vit_ckpts, tmp_path):
    """SAM's position embedding is not resized: another image size is refused before anything is
    written, in one line (it used to fail inside --verify with a traceback, files written)."""
    out = tmp_path / "m"
    code, _, err = run(
        capsys, "convert", vit_ckpts["official_sam"], "--to", "flax", "-o", str(out),
        "--verify", "--verify-shape", "1x3x64x64",
    )  # fmt: skip
    assert code == cli.EXIT_USAGE, err
    assert err.count("\n") == 1 and "Sam: the image gives a 4x4 token grid" in err
    assert "feed 128 x 128 images" in err
    assert list(tmp_path.iterdir()) == []
