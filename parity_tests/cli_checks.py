"""Checks the bad-input tables share: the CLI's one-line error, and the CLI run in a child
process that reports its own peak resident memory (for the tests that bound what a hostile file
can make the converter allocate)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

__all__ = ["one_line", "peak_rss_mb"]


def one_line(code: int, err: str, exit_code: int, message: str) -> None:
    """``weight-convert`` failed with ``exit_code`` and one stderr line, no traceback, that
    matches the regex ``message``."""
    assert code == exit_code, err
    assert err.startswith("weight-convert: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and re.search(message, err), err


#: the CLI in a child that reports its own peak resident memory (VmHWM: the rusage of a
#: child counts the parent's pages it was forked with)
_CHILD = """
import sys
from weight_convert import cli
try:
    code = cli.main(sys.argv[1:])
finally:
    peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
    print(peak[0].split()[1])
sys.exit(code)
"""


def peak_rss_mb(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, float]:
    """Exit code, stderr and peak resident memory (MB) of ``weight-convert ARGS`` (``env``:
    variables set in the child, e.g. a lighter Keras backend)."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stderr, int(proc.stdout.split()[-1]) / 1024
