"""Hostile detectron2 ``.pkl`` files (made in hostile.py from a good ViTDet pickle): each row
gives its one line, its exit code and no output; the bombs are refused within ``RSS_BOUND_MB``
in a child process too. Pickles of protocols 0 and 1 (old detectron ``.pkl`` files) are read as
the others are."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import checkpoint_factory as factory
import hostile
import numpy as np
import pytest
from cli_checks import one_line, peak_rss_mb

from weight_convert import checkpoints, cli, errors
from zoo.registry import FAMILIES

#: peak resident memory allowed to a run refusing a bomb: 34-36 MB measured here (a tiny
#: conversion peaks ~36 MB); 676-2084 MB at exit 0 before the stand-ins (noted in ROWS)
RSS_BOUND_MB = 200


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    return Path(factory.detectron2_vitdet(root / "vitdet.pkl", FAMILIES["vitdet"].tiny)[0])


@dataclass
class Row:
    name: str
    make: Callable[[Path, Path], Path]
    error: type[errors.ConvertError]
    message: str
    args: tuple[str, ...] = ()
    memory: bool = False


ROWS = [
    Row("_codecs.encode 'hex' x30", hostile.pkl_hex_bomb, errors.UnsafePickleError,
        r"hex.pkl: its pickle calls _codecs.encode as no pickler writes it \(encoding 'hex'",
        memory=True),  # 2084 MB
    # before: exit 0, the heap's bytes converted as the weight
    Row("numpy.ndarray(shape) as a weight", hostile.pkl_uninitialised, errors.UnsafePickleError,
        r"calls numpy.ndarray as no pickler writes it \(directly: uninitialised memory",
        args=("--allow-nonfinite",)),
    Row("object array shorter than its shape", hostile.pkl_short_object_array,
        errors.CheckpointError,
        r"corrupt pickle: an object array of shape \(100000000,\) with 1 items"),  # segfault
    Row("array data shorter than its shape", hostile.pkl_short_array, errors.CheckpointError,
        r"an array of shape \(64, 64\) \(float32\) with 4 bytes of data, not 16384"),
    Row("memo index 2**27", hostile.pkl_memo_bomb, errors.CheckpointError,
        "corrupt pickle: memo index 134217727 out of sequence", memory=True),  # 2084 MB
    Row("8 Mi opcodes", hostile.pkl_opcode_flood, errors.CheckpointError,
        r"refused: a pickle of more than 2097152 opcodes", memory=True),  # 676 MB
]  # fmt: skip


def _one_line(code: int, err: str, row: Row) -> None:
    one_line(code, err, row.error.exit_code, row.message)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_bad_pkl(row: Row, good, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    path = row.make(good, src)
    args = ["convert", str(path), "--to", "torch", "-o", str(out / "o.pth"), *row.args]
    _one_line(cli.main(args), capsys.readouterr().err, row)
    _one_line(cli.main(["inspect", str(path)]), capsys.readouterr().err, row)
    assert list(out.iterdir()) == [], "an output (or temporary) file was left behind"


@pytest.mark.parametrize("row", [r for r in ROWS if r.memory], ids=lambda r: r.name)
def test_bomb_is_refused_within_bounded_memory(row: Row, good, tmp_path):
    path = row.make(good, tmp_path)
    args = ["convert", str(path), "--to", "torch", "-o", "o.pth", *row.args]
    code, err, peak = peak_rss_mb(args, tmp_path)
    _one_line(code, err, row)
    assert peak < RSS_BOUND_MB, f"peak RSS {peak:.0f} MB"
    assert not (tmp_path / "o.pth").exists()


@pytest.mark.parametrize("protocol", [0, 1])
def test_old_protocols_convert_as_the_others(protocol, good, tmp_path, capsys):
    """A ``.pkl`` of protocol 0 or 1 (no PROTO marker) is sniffed as a pickle and converts to
    what the protocol 2 file converts to."""
    with open(good, "rb") as f:
        data = pickle.load(f)  # noqa: S301 - the suite's own file
    old = tmp_path / f"protocol{protocol}.pkl"
    old.write_bytes(pickle.dumps(data, protocol=protocol))
    assert checkpoints.sniff(old) == "pickle"
    outputs = []
    for path in (good, old):
        outputs.append(tmp_path / f"{path.stem}.safetensors")
        code = cli.main(["convert", str(path), "--to", "torch", "-o", str(outputs[-1])])
        assert code == 0, capsys.readouterr().err
    want, _ = checkpoints.load_state_dict(outputs[0])
    got, _ = checkpoints.load_state_dict(outputs[1])
    assert list(got) == list(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)


def test_text_named_pkl_is_not_a_pickle(tmp_path, capsys):
    """The sniffer takes a file for a protocol 0/1 pickle only if it also ends with STOP."""
    path = tmp_path / "notes.pkl"
    path.write_text("(just some text in parentheses)\n")
    code = cli.main(["convert", str(path), "--to", "torch", "-o", str(tmp_path / "o.pth")])
    err = capsys.readouterr().err
    assert code == errors.NotACheckpointError.exit_code and "is not a checkpoint" in err, err


def test_allowed_globals_are_stand_ins():
    """What a pickle's globals resolve to: stand-ins (``StandIn``: no type, so ``NEWOBJ`` reaches
    no real ``__new__``) or sealed records and names (no ``BUILD`` changes them)."""
    from weight_convert.numpy_pickle import NUMPY_GLOBALS
    from weight_convert.safe_pickle import Sealed
    from weight_convert.torch_pickle import ALLOWED_GLOBALS

    for table in (NUMPY_GLOBALS, ALLOWED_GLOBALS):
        for key, value in table.items():
            assert isinstance(value, (Sealed, str)) and not isinstance(value, type), key


@pytest.mark.parametrize(
    "opcodes",
    [
        b"ctorch\ndevice\n]K\x01a\x85\x81.",  # NEWOBJ: str.__new__(str, [1]) before
        b"ctorch\nfloat32\n}X\x04\x00\x00\x00nameX\x05\x00\x00\x00int64sb.",  # renamed it before
        b"c__builtin__\nset\n]\x85R}U\x01aK\x01sb.",  # BUILD on a set
    ],
    ids=["NEWOBJ", "BUILD on a global", "BUILD on a plain object"],
)
def test_newobj_and_build_reach_no_real_object(opcodes, tmp_path):
    from io import BytesIO

    from weight_convert import torch_pickle

    with pytest.raises(errors.CheckpointError):
        torch_pickle.loads(BytesIO(b"\x80\x02" + opcodes), lambda key, nbytes: None)
    assert torch_pickle.ALLOWED_GLOBALS[("torch", "float32")].name == "float32"
