"""Every bad input the converter can meet, as a table: each gives one line naming the problem, its
own exit code (``weight_convert.errors.EXIT_CODES``) and no output file, not even a temporary one.
The deliberate-case flags (``--allow-missing``, ``--allow-unused``, ``--allow-nonfinite``,
``--force``) turn the matching rows into conversions. Pickles that would run code are refused
with nothing executed: a marker file their payload would create never appears."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import checkpoint_factory as factory
import numpy as np
import pytest
import torch
from bad_files import (
    empty_file,
    flax_missing_key,
    float16_overflow,
    malicious_pkl,
    malicious_pth,
    missing_file,
    missing_key,
    nan_weight,
    object_array_pkl,
    official_state,
    random_bytes,
    safetensors_named_pth,
    shape_mismatch,
    the_good_one,
    truncated_pth,
    truncated_safetensors,
    unexpected_key,
    unknown_extension,
    unknown_layout,
)

from weight_convert import cli, errors
from zoo.registry import FAMILIES

#: the swin family's tiny config, as overrides of a variant
SMALL_SWIN = dataclasses.asdict(FAMILIES["swin"].tiny)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("good")
    pth = Path(factory.official_swin2d(root / "swin.pth", seed=0, **SMALL_SWIN)[0])
    flax = root / "swin_flax.safetensors"
    assert cli.main(["convert", str(pth), "--to", "flax", "-o", str(flax)]) == 0
    return {"pth": pth, "flax": flax}


@dataclass
class Case:
    name: str
    make: Callable[[dict, Path], Path]
    error: type[errors.ConvertError]
    message: str  # regex the one-line message must match
    args: tuple[str, ...] = ()
    output: str = "out.safetensors"  # under the (empty) output directory
    to: str = "torch"


CASES = [
    Case("missing file", missing_file, errors.MissingFileError, "no checkpoint file at .*nowhere"),
    Case("empty file", empty_file, errors.EmptyFileError, r"empty\.pth is empty \(0 bytes\)"),
    Case("truncated .pth", truncated_pth, errors.CheckpointError, "truncated or corrupt"),
    Case(
        "truncated .safetensors",
        truncated_safetensors,
        errors.CheckpointError,
        "truncated safetensors file",
    ),
    Case("random bytes", random_bytes, errors.NotACheckpointError, "is not a checkpoint"),
    Case(
        "safetensors named .pth",
        safetensors_named_pth,
        errors.WrongFormatError,
        "a .pth file should be a PyTorch zip checkpoint .* but this is a safetensors file",
    ),
    Case(
        "unknown extension",
        unknown_extension,
        errors.WrongFormatError,
        "unsupported file extension .* its content is a PyTorch zip",
    ),
    Case(
        "pickle running code (.pth)",
        malicious_pth,
        errors.UnsafePickleError,
        r"would run code \(it imports \S*getattr\); .*nothing from the file ran",
    ),
    Case(
        "pickle running code (detectron2 .pkl)",
        malicious_pkl,
        errors.UnsafePickleError,
        r"would run code \(it imports pathlib\S*\)",
    ),
    Case(
        "object array in a .pkl",
        object_array_pkl,
        errors.UnsupportedTensorError,
        "tensor w has dtype object, which the model does not compute in",
    ),
    Case(
        "another family",
        the_good_one,
        errors.WrongModelError,
        r"asked for video_swin_tiny \(video_swin\) but the checkpoint is a swin model",
        ("--variant", "video_swin_tiny"),
    ),
    Case(
        "another variant",
        the_good_one,
        errors.WrongModelError,
        "checkpoint is not swin_tiny_patch4_window7_224: embed_dim=32 \\(expected 96\\)",
        ("--variant", "swin_tiny_patch4_window7_224"),
    ),
    Case("unknown layout", unknown_layout, errors.LayoutError, r"unknown checkpoint: 2 tensor"),
    Case(
        "shape mismatch",
        shape_mismatch,
        errors.ShapeMismatchError,
        r"layers.1.blocks.0.mlp.fc1.bias has shape \(5,\); .* needs \(256,\)",
    ),
    Case(
        "missing key",
        missing_key,
        errors.MissingKeysError,
        "official/swin checkpoint: 1 missing tensor.*: layers.1.blocks.1.norm2.bias "
        ".*--allow-missing",
    ),
    Case(
        "unexpected key",
        unexpected_key,
        errors.UnexpectedKeysError,
        "1 unexpected tensor.*: aux_head.weight .*--allow-unused",
    ),
    Case(
        "NaN / Inf",
        nan_weight,
        errors.NonFiniteError,
        r"2 tensor\(s\) hold NaN or Inf: .*qkv.weight \(1 NaN, 0 Inf\).*head.bias \(0 NaN, 1 Inf\)",
    ),
    Case(
        "NaN / Inf (to Flax)",
        nan_weight,
        errors.NonFiniteError,
        "hold NaN or Inf",
        to="flax",
        output="out",
    ),
    Case(
        "--dtype float16 overflow",
        float16_overflow,
        errors.DtypeOverflowError,
        r"--dtype float16: 2 tensor\(s\) hold finite values beyond float16's range "
        r"\(\|x\| > 65504\).*qkv.weight \(1 value\(s\)\).*head.weight .*--allow-nonfinite",
        ("--dtype", "float16"),
    ),
    Case(
        "--dtype float16 overflow (to Flax)",
        float16_overflow,
        errors.DtypeOverflowError,
        "beyond float16's range",
        ("--dtype", "float16"),
        to="flax",
        output="out",
    ),
    Case(
        "Flax file missing a tensor",
        flax_missing_key,
        errors.MissingKeysError,
        "SwinTransformer file: 1 missing tensor.*: norm.bias",
    ),
    Case(
        "output directory is a file",
        the_good_one,
        errors.OutputNotWritableError,
        "cannot write .*: .*blocker is not a directory",
        output="blocker/sub/out.safetensors",
    ),
]


def test_exit_codes_are_distinct():
    codes = [c.error.exit_code for c in CASES if c.error is not errors.CheckpointError]
    kinds = {c.error for c in CASES}
    assert len({k.exit_code for k in kinds}) == len(kinds), "two kinds share an exit code"
    assert 0 not in codes and set(codes) <= set(errors.EXIT_CODES)


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, good, tmp_path, capsys):
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    (out_dir / "blocker").write_bytes(b"a file where a directory should be")
    source = case.make(good, src_dir)
    before = _files(out_dir)
    code = cli.main(
        ["convert", str(source), "--to", case.to, "-o", str(out_dir / case.output), *case.args]
    )
    _, err = capsys.readouterr()
    assert code == case.error.exit_code, err
    assert err.startswith("weight-convert: error: ") and err.count("\n") == 1, err
    assert re.search(case.message, err), err
    assert _files(out_dir) == before, "an output (or temporary) file was left behind"
    assert not (src_dir / "MARKER").exists(), "the pickle's payload ran"


def test_payload_is_real(good, tmp_path):
    """The malicious files above do run their payload when loaded without weights_only: the
    refusal is what kept the marker away."""
    torch.load(malicious_pth(good, tmp_path), weights_only=False)
    assert (tmp_path / "MARKER").exists()
    (tmp_path / "MARKER").unlink()
    with open(malicious_pkl(good, tmp_path), "rb") as f:
        pickle.load(f)
    assert (tmp_path / "MARKER").exists()


@pytest.mark.parametrize(
    "make,flags",
    [
        (missing_key, ("--allow-missing", "layers.1.blocks.*.norm2.bias")),
        (unexpected_key, ("--allow-unused", "aux_head.*")),
        (nan_weight, ("--allow-nonfinite",)),
        (float16_overflow, ("--dtype", "float16", "--allow-nonfinite")),
    ],
    ids=["--allow-missing", "--allow-unused", "--allow-nonfinite", "--dtype-overflow-allowed"],
)
@pytest.mark.parametrize("to", ["torch", "flax"])
def test_deliberate_cases_convert(make, flags, to, good, tmp_path, capsys):
    """The flags turn the matching rows into conversions; a PyTorch output leaves an allowed
    missing tensor out, a Flax one initializes it; NaN / Inf arrive unchanged, and values a
    cast overflows arrive as the Inf it gives."""
    from weight_convert import checkpoints

    source = make(good, tmp_path)
    out = tmp_path / ("out.safetensors" if to == "torch" else "out")
    code = cli.main(["convert", str(source), "--to", to, "-o", str(out), *flags])
    _, err = capsys.readouterr()
    assert code == 0, err
    written = out if to == "torch" else out.with_suffix(".safetensors")
    state, _ = checkpoints.load_state_dict(written)
    src = {k: v.numpy() for k, v in official_state(source).items()}
    if make is missing_key:
        key = "layers.1.blocks.1.norm2.bias"
        assert (key in state) == (to == "flax")
    if make is unexpected_key:
        assert "aux_head.weight" not in state
    if make is nan_weight and to == "torch":
        np.testing.assert_array_equal(
            state["layers.0.blocks.0.attn.qkv.weight"], src["layers.0.blocks.0.attn.qkv.weight"]
        )
        assert np.isinf(state["head.bias"][3])
    if make is float16_overflow:  # written as the cast gives it: Inf, in float16
        key = (
            "layers.0.blocks.0.attn.qkv.weight"
            if to == "torch"
            else "layers.0.blocks.0.attn.qkv.kernel"
        )
        assert state[key].dtype == np.float16 and np.isposinf(state[key]).sum() == 1


def test_force_replaces_and_existing_output_is_kept(good, tmp_path, capsys):
    target = tmp_path / "m.safetensors"
    target.write_bytes(b"keep me")
    code = cli.main(["convert", str(good["pth"]), "--to", "torch", "-o", str(target)])
    _, err = capsys.readouterr()
    assert code == errors.OutputExistsError.exit_code
    assert err.count("\n") == 1 and "output exists" in err and "--force" in err
    assert target.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    code = cli.main(["convert", str(good["pth"]), "--to", "torch", "-o", str(target), "--force"])
    assert code == 0 and target.read_bytes() != b"keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(good, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code = cli.main(["convert", str(good["pth"]), "--to", "torch", "-o", str(locked / "m.pth")])
    _, err = capsys.readouterr()
    assert code == errors.OutputNotWritableError.exit_code and "not writable" in err
    assert list(locked.iterdir()) == []


def test_no_traceback_from_the_console(tmp_path):
    """The installed program prints the one line too, never a traceback."""
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(1).bytes(512))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "weight_convert",
            "convert",
            str(tmp_path / "random.pth"),
            "--to",
            "torch",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == errors.NotACheckpointError.exit_code
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random.pth"]


def test_readme_lists_every_exit_code():
    """The README's exit-code table is errors.EXIT_CODES, row for row."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^  \| (\d+) \| (.+) \|$", readme, re.M))
    assert {int(k) for k in rows} == set(errors.EXIT_CODES)
    for code, text in errors.EXIT_CODES.items():
        assert rows[str(code)].replace("`", "") == text, code
