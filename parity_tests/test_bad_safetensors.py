"""Malformed safetensors files, as a table (the sibling of test_bad_inputs.py): each gives one
line, its exit code and no output file, from ``convert`` and ``inspect`` alike; the header is
read as strictly as the reference reader (the safetensors crate, ``safe_open``), and each row
says whether that reader refuses the file too. A file claiming a 4 GiB
``relative_position_index`` (a hole on disk) is refused from its shape, without reading it.

Where this reader is stricter than the reference (``reference_refuses`` False on a malformed
file): a key given twice (the crate keeps the last), a header that does not begin with ``{``
(the format says it must; the crate skips leading spaces), dimensions over 2^63-1 (NumPy's
limit). Dtypes the format has and the converter does not take (float8, complex, wide unsigned)
are exit 18, in files the reference reads."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_safetensors import (
    INDEX,
    TARGET,
    Parts,
    Raw,
    appended,
    duplicated,
    field_twice,
    good_parts,
    renamed,
    replaced,
    retyped,
    set_entry,
    shifted,
    sparse_index,
    trailing,
)
from cli_checks import one_line
from safetensors import SafetensorError, safe_open

from weight_convert import cli, errors

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def good() -> Parts:
    return good_parts()


@dataclass
class Case:
    name: str
    bend: Callable[[Parts], None]
    error: type[errors.ConvertError]
    message: str  # regex the one-line message must match
    reference_refuses: bool = True  # safetensors.safe_open raises on the file too


CORRUPT = errors.CheckpointError
UNSUPPORTED = errors.UnsupportedTensorError
CASES = [
    # ---- the header's JSON
    Case(
        "key twice, two ranges",
        renamed("head.weight", TARGET),
        CORRUPT,
        "key head.bias given twice",
    ),
    Case(
        "key twice, same entry",
        duplicated(TARGET),
        CORRUPT,
        "key head.bias given twice",
        reference_refuses=False,
    ),
    Case("field twice", field_twice, CORRUPT, "key dtype given twice"),
    Case(
        "nested 100,000 deep",
        set_entry("x", Raw("[" * 100_000 + "]" * 100_000)),
        CORRUPT,
        "JSON nested deeper than 127 levels",
    ),
    Case("nested 200 deep", set_entry("x", Raw("[" * 200 + "]" * 200)), CORRUPT, "deeper than 127"),
    Case(
        "header is an array",
        replaced(prefix="[", suffix="]"),
        CORRUPT,
        r"begins with b'\[\{",
    ),
    Case(
        "header begins with a space",
        replaced(prefix=" "),
        CORRUPT,
        r"begins with b' \{.*not '\{'",
        reference_refuses=False,
    ),
    Case("NaN", set_entry("shape", [Raw("NaN")]), CORRUPT, "NaN is not JSON"),
    Case(
        "a 5001-digit number",
        set_entry("shape", [Raw("1" + "0" * 5000)]),
        CORRUPT,
        "corrupt safetensors header .*digits",
    ),
    Case(
        "lone surrogate",
        replaced(metadata={"format": Raw('"\\ud800"')}),
        CORRUPT,
        "__metadata__ is not UTF-8",
    ),
    # ---- __metadata__
    Case(
        "metadata a list",
        replaced(metadata=["format", "pt"]),
        CORRUPT,
        "__metadata__ must map strings to strings",
    ),
    Case(
        "metadata value an int",
        replaced(metadata={"format": "pt", "epoch": 3}),
        CORRUPT,
        r'strings, not \{"format"',
    ),
    # ---- a tensor's entry
    Case(
        "entry not an object",
        appended("extra", None),
        CORRUPT,
        "extra: malformed entry null",
    ),
    Case("no shape", set_entry("shape", None), CORRUPT, "head.bias: malformed entry .no shape."),
    Case(
        "dtype no format has",
        set_entry("dtype", "F128"),
        CORRUPT,
        "dtype F128 is none the format names",
    ),
    Case(
        "dimension 2^64",
        set_entry("shape", [2**64]),
        CORRUPT,
        r"shape \[18446744073709551616\] is not a list of sizes",
    ),
    Case("negative dimension", set_entry("shape", [-10]), CORRUPT, r"shape \[-10\] is not"),
    Case("float dimension", set_entry("shape", [10.0]), CORRUPT, r"shape \[10.0\] is not"),
    Case("bool dimension", set_entry("shape", [True, 10]), CORRUPT, r"shape \[true, 10\] is not"),
    Case(
        "dimension 2^63 beside a 0",
        appended("extra", {"dtype": "F32", "shape": [0, 2**63]}),
        CORRUPT,
        r"extra: shape \[0, 9223372036854775808\] is not a list of sizes",
        reference_refuses=False,
    ),
    Case(
        "element count overflows",
        appended("extra", {"dtype": "F32", "shape": [2**32, 2**32, 0]}),
        CORRUPT,
        r"extra: shape \[4294967296, 4294967296, 0\] holds over 2\^63-1 elements",
    ),
    Case(
        "float offsets",
        set_entry("data_offsets", [0.0, 40]),
        CORRUPT,
        r"data_offsets \[0.0, 40\] are not \[begin, end\]",
    ),
    Case(
        "bool offsets",
        set_entry("data_offsets", [False, 40]),
        CORRUPT,
        r"data_offsets \[false, 40\] are not",
    ),
    Case(
        "negative offsets",
        set_entry("data_offsets", [-40, 0]),
        CORRUPT,
        r"data_offsets \[-40, 0\] are not",
    ),
    Case(
        "three offsets",
        set_entry("data_offsets", [0, 40, 40]),
        CORRUPT,
        r"data_offsets \[0, 40, 40\] are not",
    ),
    Case(
        "range not the shape's size",
        set_entry("shape", [11]),
        CORRUPT,
        "hold 40 bytes; shape .11. of F32 needs 44",
    ),
    # ---- the byte ranges
    Case(
        "overlapping ranges",
        shifted(-4, pad=False),
        CORRUPT,
        "head.bias: data_offsets .* overlap the tensor before it",
    ),
    Case(
        "gap between ranges",
        shifted(8),
        CORRUPT,
        "head.bias: data_offsets .* leave a gap after the tensor before it",
    ),
    Case(
        "bytes after the last tensor",
        trailing(16),
        CORRUPT,
        r"16 byte\(s\) after the last tensor's data",
    ),
    Case(
        "header length beyond the file",
        replaced(length=50_000_000),
        CORRUPT,
        "truncated safetensors file .header of 50000000 bytes",
    ),
    Case(
        "header length beyond the format",
        replaced(length=100_000_008),
        CORRUPT,
        "header of 100000008 bytes; the format allows 100000000",
    ),
    # ---- dtypes the format has, the converter does not take: files the reference reads
    *[
        Case(
            f"dtype {dtype}",
            retyped(dtype, [n]),
            UNSUPPORTED,
            f"tensor head.bias is {dtype}, a dtype the converter does not take",
            reference_refuses=False,
        )
        for dtype, n in [
            ("F8_E4M3", 40),
            ("F8_E5M2", 40),
            ("C64", 5),
            ("U16", 20),
            ("U32", 10),
            ("U64", 5),
            ("F4", 80),
        ]
    ],
]


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def _one_line(code: int, err: str, case: Case) -> None:
    one_line(code, err, case.error.exit_code, case.message)


def _reference_refuses(path: Path) -> bool:
    try:
        with safe_open(str(path), "np") as f:
            list(f.keys())
    except SafetensorError:
        return True
    return False


def test_the_good_file(good, tmp_path, capsys):
    """The file every row bends converts, and the reference reads it."""
    path = good.write(tmp_path / "good.safetensors")
    assert not _reference_refuses(path)
    code = cli.main(["convert", str(path), "--to", "torch", "-o", str(tmp_path / "o.safetensors")])
    assert code == 0, capsys.readouterr().err
    assert cli.main(["inspect", str(path)]) == 0


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_safetensors(case: Case, good, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    path = good.bend(case.bend).write(tmp_path / "bad.safetensors")
    code = cli.main(["convert", str(path), "--to", "flax", "-o", str(out_dir / "m")])
    _, err = capsys.readouterr()
    _one_line(code, err, case)
    assert _files(out_dir) == [], "an output (or temporary) file was left behind"
    code = cli.main(["inspect", str(path)])
    out, inspected = capsys.readouterr()
    assert inspected == err and out == "", "inspect and convert disagree"
    assert _reference_refuses(path) == case.reference_refuses


#: runs the CLI and writes its peak resident memory (KiB) to the file argv[1]: the kernel's
#: high-water mark of this process image (VmHWM); ru_maxrss would also count the parent's, as
#: the kernel carries it over the exec of a vfork'ed child
_MEASURED = """
import resource, sys
from weight_convert.cli import main
def peak():
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    code = main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as f:
        f.write(str(peak()))
sys.exit(code)
"""


def _run_measured(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """The CLI in a fresh process (this worktree's code first on the path) and its peak RSS in
    bytes."""
    report = tmp_path / "maxrss"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, str(report), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    return proc, int(report.read_text()) * 1024


def test_huge_index_is_refused_from_its_shape(good, tmp_path):
    """A relative_position_index claiming int64 (23170, 23170), 4 GiB, all of it a hole in the
    file: refused from its shape (the window's is (49, 49)), its data never read. Peak RSS
    measured on this machine (VmHWM): 35 MiB refused by ``convert``, 33 MiB by ``inspect``;
    the good file's whole conversion to Flax 245 MiB (to a PyTorch .safetensors 37 MiB); 4131
    MiB when the index was read before its shape was compared. The bound, 1 GiB, sits between."""
    path = sparse_index(good, tmp_path / "huge.safetensors", side=23170)
    assert path.stat().st_size > 4 << 30 and path.stat().st_blocks * 512 < 64 << 20, "not sparse"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    case = Case(
        "huge index",
        replaced(),
        errors.LayoutError,
        f"{INDEX} .shape .23170, 23170.. is not the relative position index of window .7, 7.",
    )
    convert = ["convert", str(path), "--to", "flax", "-o", str(out_dir / "m")]
    for args in (convert, ["inspect", str(path)]):
        proc, peak = _run_measured(tmp_path, *args)
        _one_line(proc.returncode, proc.stderr, case)
        assert peak < 1 << 30, f"{args[0]}: peak RSS {peak / 2**20:.0f} MiB"
    assert _files(out_dir) == []
