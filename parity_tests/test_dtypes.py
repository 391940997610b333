"""Conversion keeps each tensor's dtype (float32, float16, bfloat16) unless ``--dtype`` casts it:
PyTorch -> Flax -> PyTorch returns the same bits in the same dtype, and the cast is NumPy's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import checkpoint_factory as factory
import numpy as np
import pytest
import torch

from weight_convert import checkpoints, cli, errors
from weight_convert.tensors import BFLOAT16, FLOAT_DTYPES, from_torch
from zoo.registry import FAMILIES

#: the swin family's tiny config, as overrides of a variant
SMALL_SWIN = dataclasses.asdict(FAMILIES["swin"].tiny)
TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """The same small official Swin checkpoint in each floating dtype (buffers keep theirs)."""
    root = tmp_path_factory.mktemp("dtypes")
    path = Path(factory.official_swin2d(root / "swin_float32.pth", seed=4, **SMALL_SWIN)[0])
    sd = torch.load(path, weights_only=True)["model"]
    out = {"float32": path}
    for name in ("float16", "bfloat16"):
        cast = {k: v.to(TORCH_DTYPES[name]) if v.is_floating_point() else v for k, v in sd.items()}
        out[name] = root / f"swin_{name}.pth"
        torch.save({"model": cast}, out[name])
    return out


def _source(path: Path) -> dict[str, np.ndarray]:
    return {k: from_torch(v) for k, v in torch.load(path, weights_only=True)["model"].items()}


def _convert(*argv: str) -> None:
    assert cli.main(["convert", *argv]) == 0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_round_trip_keeps_dtype_and_bits(dtype, ckpts, tmp_path):
    flax = tmp_path / "m"
    _convert(str(ckpts[dtype]), "--to", "flax", "-o", str(flax))
    state, _ = checkpoints.load_state_dict(flax.with_suffix(".safetensors"))
    floats = {str(v.dtype) for v in state.values() if v.dtype.kind == "f" or v.dtype == BFLOAT16}
    assert floats == {dtype}
    back = tmp_path / "back.pth"
    _convert(str(flax.with_suffix(".safetensors")), "--to", "torch", "-o", str(back))
    got, want = _source(back), _source(ckpts[dtype])
    learned = [k for k in want if not k.endswith(("relative_position_index", "attn_mask"))]
    for key in learned:
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key].view(np.uint8), want[key].view(np.uint8), key)


@pytest.mark.parametrize(
    "source,cast", [("bfloat16", "float32"), ("float32", "bfloat16"), ("float32", "float16")]
)
def test_dtype_flag_casts_floating_tensors(source, cast, ckpts, tmp_path):
    out = tmp_path / "cast.safetensors"
    _convert(str(ckpts[source]), "--to", "torch", "-o", str(out), "--dtype", cast)
    got, _ = checkpoints.load_state_dict(out)
    want = _source(ckpts[source])
    for key, value in want.items():
        if value.dtype.kind == "f" or value.dtype == BFLOAT16:
            expected = value.astype(FLOAT_DTYPES[cast])
        else:
            expected = value  # integer buffers keep their dtype
        assert got[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(got[key].view(np.uint8), expected.view(np.uint8), key)


def test_bfloat16_flax_file_verifies(ckpts, tmp_path, capsys):
    """A bfloat16 Flax file loads into the float32 model with the same values: --verify passes."""
    code = cli.main(
        [
            "convert",
            str(ckpts["bfloat16"]),
            "--to",
            "flax",
            "-o",
            str(tmp_path / "m"),
            "--verify",
            "--verify-shape",
            "1x3x64x64",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "PASS" in out


@pytest.mark.parametrize("to", ["torch", "flax"])
def test_float16_cast_overflow_is_refused(ckpts, tmp_path, capsys, to):
    """Finite float32 values beyond float16's range become Inf in the cast: refused after the
    cast (one line naming the tensor, its own exit code, nothing written) unless
    ``--allow-nonfinite``."""
    sd = torch.load(ckpts["float32"], weights_only=True)["model"]
    sd["layers.1.blocks.0.mlp.fc1.weight"][0, 0] = 70000.0  # float16 max: 65504
    source = tmp_path / "big.pth"
    torch.save({"model": sd}, source)
    out = tmp_path / ("out.safetensors" if to == "torch" else "out")
    argv = ["convert", str(source), "--to", to, "-o", str(out), "--dtype", "float16"]
    code = cli.main(argv)
    _, err = capsys.readouterr()
    assert code != 0, "the cast's Inf was written"
    assert code == errors.DtypeOverflowError.exit_code and err.count("\n") == 1, err
    assert "layers.1.blocks.0.mlp.fc1.weight (1 value(s))" in err and "float16" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.pth"]
    assert cli.main([*argv, "--allow-nonfinite"]) == 0
