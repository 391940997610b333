"""Hostile Keras and Flax port files, as a table: a config (``.keras`` ``config.json``, the
``.weights.h5`` attribute ``vit_zoo_config``, Flax ``.safetensors`` metadata) of the wrong types,
out of range or claiming a model its weights are not; zip members, HDF5 structure and datasets
that lie about their size, link in loops or live elsewhere; dtypes the model cannot take; msgpack
trees with a path twice or a kernel of the wrong rank. Each gives one line naming the problem, its
own exit code and no output file, and the memory of a refusal stays bounded whatever the file
declares (measured in a child process)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import checkpoint_factory as factory
import numpy as np
import pytest
import torch
from bad_port_files import (
    HEAD,
    archive_with,
    deep_json,
    deflated_zeros,
    flax_with_config,
    h5_edited,
    hard_twice,
    huge_gzip_head,
    keras_with_config,
    msgpack_dotted,
    msgpack_edited,
    msgpack_rank1,
    msgpack_twice,
    peak_rss_mb,
    replace_dataset,
    soft_loop,
    weights_with_config,
)

from weight_convert import cli, errors
from zoo.registry import FAMILIES

SMALL_SWIN = dataclasses.asdict(FAMILIES["swin"].tiny)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("good")
    pth = Path(factory.official_swin2d(root / "swin.pth", seed=0, **SMALL_SWIN)[0])
    for target, out in (("keras", "k"), ("flax", "f"), ("flax", "m.msgpack")):
        assert cli.main(["convert", str(pth), "--to", target, "-o", str(root / out)]) == 0
    return {
        "pth": pth,
        "keras": root / "k.keras",
        "weights": root / "k.weights.h5",
        "flax": root / "f.safetensors",
        "msgpack": root / "m.msgpack",
    }


@dataclass
class Case:
    name: str
    make: Callable[[dict, Path], Path]
    error: type[errors.ConvertError]
    message: str  # regex the one-line message must match
    args: tuple[str, ...] = ()


A_CONFIGS = [
    Case(
        "keras: config claims embed_dim 4096",
        lambda g, d: keras_with_config(g, d, {"embed_dim": 4096, "num_heads": [4, 8]}),
        errors.WrongModelError,
        r"the file's weights are not the SwinTransformer its config claims: it holds 63 tensors "
        r"of 137,248 values, that model 63 of [\d,]+; none of the file's is the shape of "
        r"patch_embed.proj.weight \(4096, 3, 4, 4\)",
    ),
    Case(
        ".weights.h5: config claims 10^6 classes",
        lambda g, d: weights_with_config(g, d, {"num_classes": 1_000_000}),
        errors.WrongModelError,
        "not the SwinTransformer its config claims.*head.weight \\(1000000, 64\\)",
    ),
    Case(
        "flax: depths [1000000, 2] (cheaply)",
        lambda g, d: flax_with_config(g, d, {"depths": [1_000_000, 2]}),
        errors.CheckpointError,
        r"unreadable config: config field depths: 1000002 blocks",
    ),
    Case("keras: JSON 30000 deep", deep_json, errors.CheckpointError, "nested too deeply"),
    Case(
        ".weights.h5: depths [2.5, 2]",
        lambda g, d: weights_with_config(g, d, {"depths": [2.5, 2]}),
        errors.CheckpointError,
        r"config field depths\[0\]: expected an integer, got float 2.5",
    ),
    Case(
        'flax: embed_dim "32"',
        lambda g, d: flax_with_config(g, d, {"embed_dim": "32"}),
        errors.CheckpointError,
        "config field embed_dim: expected an integer, got str '32'",
    ),
    Case(
        "flax: embed_dim 32.0",
        lambda g, d: flax_with_config(g, d, {"embed_dim": 32.0}),
        errors.CheckpointError,
        "config field embed_dim: expected an integer, got float 32.0",
    ),
    Case(
        ".weights.h5: mlp_ratio NaN",
        lambda g, d: weights_with_config(g, d, {"mlp_ratio": float("nan")}),
        errors.CheckpointError,
        "config field mlp_ratio: nan is not a finite number",
    ),
    Case(
        "keras: depths [1] * 5000",
        lambda g, d: keras_with_config(g, d, {"depths": [1] * 5000}),
        errors.CheckpointError,
        "config field depths: 5000 items",
    ),
    Case(
        ".weights.h5: num_heads [0, 0]",
        lambda g, d: weights_with_config(g, d, {"num_heads": [0, 0]}),
        errors.CheckpointError,
        r"config field num_heads: \(0, 0\) must be positive",
    ),
    Case(
        "keras: window_size 10^6",
        lambda g, d: keras_with_config(g, d, {"window_size": [1_000_000, 1_000_000]}),
        errors.CheckpointError,
        "config field window_size: .* holds more than 4096 positions",
    ),
    Case(
        "flax: window_rule evil",
        lambda g, d: flax_with_config(g, d, {"window_rule": "evil"}),
        errors.CheckpointError,
        "config field window_rule: 'evil' is none of",
    ),
    Case(
        ".weights.h5: depths [-1, 2]",
        lambda g, d: weights_with_config(g, d, {"depths": [-1, 2]}),
        errors.CheckpointError,
        r"config field depths\[0\]: -1 is outside",
    ),
    Case(
        "keras: a Keras class of no family",
        lambda g, d: keras_with_config(g, d, {}, raw=lambda c: c.update(class_name="Dense")),
        errors.WrongFormatError,
        "holds a Dense, not a model of this zoo",
    ),
    Case(
        "keras: built for 10^7 channels",
        lambda g, d: keras_with_config(
            g, d, {}, raw=lambda c: c["build_config"].update(input_shape=[None, None, None, 10**7])
        ),
        errors.CheckpointError,
        r"config.json builds the model for input \[None, None, None, 10000000\]",
    ),
]

B_STRUCTURE = [
    Case(
        "keras: model.weights.h5 deflated from 64 MiB",
        lambda g, d: deflated_zeros(g, d, "model.weights.h5", 64),
        errors.CheckpointError,
        r"model.weights.h5 declares \d{8} bytes; the SwinTransformer of its config.json needs "
        r"at most \d{7}",
    ),
    Case(
        "keras: config.json deflated from 16 MiB",
        lambda g, d: deflated_zeros(g, d, "config.json", 16),
        errors.CheckpointError,
        r"config.json declares \d{8} bytes \(limit 1048576\)",
    ),
    Case(
        "keras: a member Keras does not write",
        lambda g, d: archive_with(g["keras"], d / "extra.keras", {"assets/evil.py": b"x"}),
        errors.CheckpointError,
        "not a .keras file of this zoo: it holds members assets/evil.py",
    ),
    Case(
        ".weights.h5: gzip dataset",
        lambda g, d: h5_edited(
            g, d, replace_dataset(HEAD, lambda a: dict(data=a, compression="gzip"))
        ),
        errors.CheckpointError,
        "dataset /head/vars/0 is chunked or filtered",
    ),
    Case(
        ".weights.h5: dataset in an external file",
        lambda g, d: h5_edited(
            g,
            d,
            replace_dataset(
                HEAD,
                lambda a: dict(
                    shape=a.shape, dtype=a.dtype, external=[(str(d / "raw"), 0, a.nbytes)]
                ),
            ),
        ),
        errors.CheckpointError,
        "dataset /head/vars/0 is stored in an external file",
    ),
    Case(
        "keras: soft link loop in model.weights.h5",
        lambda g, d: h5_edited(g, d, soft_loop, keras=True),
        errors.CheckpointError,
        "/layers/loop is a SoftLink",
    ),
    Case(
        ".weights.h5: a group hard-linked twice",
        lambda g, d: h5_edited(g, d, hard_twice),
        errors.CheckpointError,
        "is reached twice",
    ),
]

C_DTYPES = [
    Case(
        f".weights.h5: {dtype} dataset",
        lambda g, d, dtype=dtype: h5_edited(
            g, d, replace_dataset(HEAD, lambda a: dict(data=a.astype(dtype)))
        ),
        errors.UnsupportedTensorError,
        f"tensor /head/vars/0 has dtype {dtype}",
    )
    for dtype in ("complex64", "uint16", "int64")
]

D_FLAX = [
    Case(
        "msgpack: kernel of rank 1",
        lambda g, d: msgpack_edited(g, d, msgpack_rank1),
        errors.ShapeMismatchError,
        "head.kernel: a kernel of rank 1",
    ),
    Case(
        "msgpack: list index 0 and '0'",
        lambda g, d: msgpack_edited(g, d, msgpack_twice),
        errors.CheckpointError,
        r"layers.0.\S+ is given twice",
    ),
    Case(
        "msgpack: key 'head.kernel' beside head/kernel",
        lambda g, d: msgpack_edited(g, d, msgpack_dotted),
        errors.CheckpointError,
        "key 'head.kernel' under the root is no name",
    ),
]

E_USAGE = [
    Case(
        "--verify-shape 1x3x100000x100000",
        lambda g, d: g["flax"],
        errors.UsageError,
        r"--verify-shape 1x3x100000x100000: an input of 30,000,000,000 values \(at most",
        ("--verify", "--verify-shape", "1x3x100000x100000"),
    ),
]

CASES = A_CONFIGS + B_STRUCTURE + C_DTYPES + D_FLAX + E_USAGE


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def _refused(case: Case, source: Path, out_dir: Path, capsys) -> str:
    """Run the conversion; check the exit code, the one line, that nothing was written."""
    code = cli.main(
        ["convert", str(source), "--to", "torch", "-o", str(out_dir / "o.pth"), *case.args]
    )
    _, err = capsys.readouterr()
    assert code == case.error.exit_code, err
    assert err.startswith("weight-convert: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert re.search(case.message, err), err
    assert _files(out_dir) == [], "an output (or temporary) file was left behind"
    return err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_port_file(case: Case, good, tmp_path, capsys):
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    _refused(case, case.make(good, src_dir), out_dir, capsys)


@pytest.mark.keras
def test_keras_load_failure_names_its_cause(good, tmp_path, capsys):
    """A file whose shapes pass as a multiset but not variable by variable (the head's kernel
    transposed): Keras' own message, its cause included, on the one line."""
    swapped = replace_dataset(HEAD, lambda a: dict(data=np.ascontiguousarray(a.T)))
    (tmp_path / "out").mkdir()
    case = Case(
        "transposed head",
        None,
        errors.WrongModelError,
        r"does not hold SwinTransformer weights of this config: A total of 1 objects could not "
        r"be loaded\. Example error message for object <Dense name=head[^>]*>: Layer 'head' "
        r"expected 2 variables",
    )
    _refused(case, h5_edited(good, tmp_path, swapped), tmp_path / "out", capsys)


@pytest.mark.keras
@pytest.mark.parametrize("kind", ["keras", "weights"])
def test_float64_is_carried_exactly(kind, good, tmp_path):
    """float64 weights in a Keras file (what --to keras writes from a float64 checkpoint) come
    back float64 and bit-identical, as every other reader carries them, not cast to float32."""
    from weight_convert import checkpoints

    sd = {k: v.double() if v.is_floating_point() else v for k, v in official(good).items()}
    torch.save({"model": sd}, tmp_path / "f64.pth")
    assert (
        cli.main(["convert", str(tmp_path / "f64.pth"), "--to", "keras", "-o", str(tmp_path / "k")])
        == 0
    )
    source = tmp_path / ("k.keras" if kind == "keras" else "k.weights.h5")
    back = tmp_path / "back.safetensors"
    assert cli.main(["convert", str(source), "--to", "torch", "-o", str(back)]) == 0
    state, _ = checkpoints.load_state_dict(back)
    for key, value in state.items():
        if key.endswith(("attn_mask", "relative_position_index")):
            continue  # derived buffers, made by the writer
        assert value.dtype == np.float64 or not np.issubdtype(value.dtype, np.floating), key
        np.testing.assert_array_equal(value, sd[key].numpy(), err_msg=key)


def official(good) -> dict[str, torch.Tensor]:
    return torch.load(good["pth"], weights_only=True)["model"]


def test_inspect_names_a_flax_file(good):
    """``sources.describe`` (what ``inspect`` shows) tells a Flax .safetensors by its metadata,
    as ``convert`` does, instead of failing to find a PyTorch layout in it."""
    from weight_convert import sources

    description = sources.describe(good["flax"])
    assert description["source"] == "flax" and description["family"] == "swin"
    assert description["config"]["embed_dim"] == 32 and description["tensors"] == 63


# --------------------------------------------------------------------------- memory


def test_declared_sizes_are_refused_within_bounded_memory(good, tmp_path):
    """Files that declare gigabytes in a few MB are refused from their declarations, at a peak
    below twice a normal conversion's from a .keras (which builds the model)."""
    normal_dir = tmp_path / "normal"
    normal_dir.mkdir()
    code, err, normal = peak_rss_mb(good["keras"], normal_dir)
    assert code == 0, err
    bound = 2 * normal
    rows = [
        (lambda d: deflated_zeros(good, d, "model.weights.h5", 1024), "model.weights.h5 declares"),
        (lambda d: deflated_zeros(good, d, "config.json", 1024), "config.json declares"),
        (lambda d: huge_gzip_head(good, d), "chunked or filtered"),
    ]
    for make, message in rows:
        d = tmp_path / message.split()[0]
        d.mkdir()
        path = make(d)
        assert path.stat().st_size < 8 << 20
        code, err, peak = peak_rss_mb(path, d)
        assert code == errors.CheckpointError.exit_code and err.count("\n") == 1, err
        assert message in err and "Traceback" not in err, err
        assert peak < bound, f"{message}: peak RSS {peak:.0f} MB, bound {bound:.0f} MB"
        assert sorted(p.name for p in d.iterdir()) == [path.name]
