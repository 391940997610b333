"""Tensors ``--allow-missing`` accepts but the architecture is solved from: one line and the
layout exit code, never a traceback, nothing written; and where another tensor tells the same
size, the conversion goes through."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import checkpoint_factory as factory
import pytest
import torch

from weight_convert import cli, errors
from zoo.registry import FAMILIES


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def vit_good(tmp_path_factory) -> dict[str, Path]:
    """A small SAM (segment-anything's ``Sam.state_dict()``) and a small detectron2 ViTDet."""
    root = tmp_path_factory.mktemp("vit_good")
    return {
        "sam": Path(factory.official_sam(root / "sam.pth", FAMILIES["sam"].tiny, seed=7)[0]),
        "vitdet": Path(factory.detectron2_vitdet(root / "vitdet.pkl", FAMILIES["vitdet"].tiny)[0]),
    }


def _without(vit_good, name: str, pattern: str, d: Path) -> Path:
    """The ``name`` checkpoint less the tensors matching ``pattern``, in its own format."""
    import fnmatch

    source = vit_good[name]
    if source.suffix == ".pkl":
        with open(source, "rb") as f:
            data = pickle.load(f)
        data["model"] = {k: v for k, v in data["model"].items() if not fnmatch.fnmatch(k, pattern)}
        out = d / source.name
        out.write_bytes(pickle.dumps(data))
        return out
    sd = torch.load(source, weights_only=True)
    out = d / source.name
    torch.save({k: v for k, v in sd.items() if not fnmatch.fnmatch(k, pattern)}, out)
    return out


@pytest.mark.parametrize(
    "name,pattern,message",
    [
        # a block without its relative-position tables: windowed or global cannot be told
        ("sam", "image_encoder.blocks.0.attn.rel_pos_*", r"blocks \[0\] have no attn.rel_pos_h"),
        ("sam", "image_encoder.blocks.1.attn.rel_pos_*", r"blocks \[1\] have no attn.rel_pos_h"),
        ("vitdet", "backbone.net.blocks.0.attn.rel_pos_*", r"blocks \[0\] have no attn.rel_pos"),
        # no pyramid norm at all: the pyramid's channels cannot be told
        ("vitdet", "backbone.simfp_*norm*", "no norm tensor in the feature pyramid"),
    ],
    ids=[
        "sam-block-0-without-rel-pos",
        "sam-block-1-without-rel-pos",
        "vitdet-block-without-rel-pos",
        "vitdet-pyramid-without-norms",
    ],
)
def test_allowed_missing_tensor_the_architecture_needs(
    vit_good, tmp_path, capsys, name, pattern, message
):
    """Tensors ``--allow-missing`` accepts but the architecture is solved from: one line and
    the layout exit code, never a traceback, nothing written."""
    source_dir, out_dir = tmp_path / "in", tmp_path / "out"
    source_dir.mkdir()
    out_dir.mkdir()
    source = _without(vit_good, name, pattern, source_dir)
    argv = ["convert", str(source), "--to", "torch", "-o", str(out_dir / "m.safetensors")]
    code = cli.main([*argv, "--allow-missing", pattern])
    _, err = capsys.readouterr()
    assert code == errors.LayoutError.exit_code, err
    assert err.startswith("weight-convert: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert "unknown checkpoint" not in err, "one layout covers every key: it is named"
    assert _files(out_dir) == []


def test_pyramid_channels_from_any_stage(vit_good, tmp_path, capsys):
    """A ViTDet checkpoint whose first pyramid stage lacks its norms (allowed missing) takes the
    pyramid's channels from another stage and converts; the output leaves those norms out."""
    from weight_convert import checkpoints

    pattern = "backbone.simfp_2.*norm*"
    source = _without(vit_good, "vitdet", pattern, tmp_path)
    out = tmp_path / "m.safetensors"
    code = cli.main(
        ["convert", str(source), "--to", "torch", "-o", str(out), "--allow-missing", pattern]
    )
    _, err = capsys.readouterr()
    assert code == 0, err
    written, _ = checkpoints.load_state_dict(out)
    original, _ = checkpoints.load_state_dict(source)
    assert not [k for k in written if k.startswith("backbone.simfp_2.") and ".norm." in k]
    assert set(written) == {k for k in original if k.startswith("backbone.")}
