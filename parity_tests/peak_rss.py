"""The CLI run in a child process that reports its own peak resident memory, for the tests that
bound what a hostile file can make the converter allocate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["peak_rss_mb"]

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


def peak_rss_mb(args: list[str], cwd: Path) -> tuple[int, str, float]:
    """Exit code, stderr and peak resident memory (MB) of ``weight-convert ARGS``."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], cwd=cwd, capture_output=True, text=True
    )
    return proc.returncode, proc.stderr, int(proc.stdout.split()[-1]) / 1024
