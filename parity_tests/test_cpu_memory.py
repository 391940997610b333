"""``zoo.cpu_memory.keep_freed_memory``: a jitted JAX call whose temporaries exceed glibc's
mmap threshold faults them in anew on every call by default, and reuses memory already faulted
in once the helper ran first. Each case runs in a fresh process (the settings are process-wide,
and JAX reads its dispatch option once)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

#: a jitted call with a 64 MiB temporary (over glibc's 32 MiB ceiling for its heap); prints the
#: median MiB faulted in per call over 8 calls after 2 (the heap can still grow in the first few
#: calls after compiling while freed blocks settle: a block refaulted once, then reused)
SCRIPT = """
import json, resource, sys
sys.path.insert(0, {root!r})
mode = sys.argv[1]
if mode == "keep":
    from zoo.cpu_memory import keep_freed_memory
    settings = keep_freed_memory()
else:
    settings = None
import jax, jax.numpy as jnp, numpy as np

@jax.jit
def f(x, w):
    y = jnp.tanh(x @ w)  # (16384, 1024) float32: 64 MiB
    return (y.T @ y).sum()

rng = np.random.default_rng(0)
x = jnp.asarray(rng.random((16384, 64), np.float32))
w = jnp.asarray(rng.random((64, 1024), np.float32))
for _ in range(2):
    f(x, w).block_until_ready()
if mode == "late":
    from zoo.cpu_memory import keep_freed_memory
    try:
        keep_freed_memory()
    except RuntimeError as e:
        print(json.dumps({{"error": str(e)}}))
    sys.exit(0)
mib = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, w).block_until_ready()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    mib.append(faults * resource.getpagesize() / 2**20)
print(json.dumps({{"mib": sorted(mib)[len(mib) // 2], "each": mib, "settings": settings}}))
"""


def _run(mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=str(ROOT)), mode],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _huge_pages_always() -> bool:
    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


def test_jax_temporaries_are_reused_not_faulted_in_anew():
    pytest.importorskip("jax")
    kept = _run("keep")
    assert kept["settings"] == {"glibc": True, "jax_synchronous_dispatch": True}
    assert kept["mib"] < 8, kept  # a few MiB of Python and JAX bookkeeping, not the 64 MiB
    if not _huge_pages_always():  # with huge pages always on, the default faults 2 MiB at a time
        default = _run("default")
        assert default["mib"] > 48, default  # the check can fail: the default refaults the block


def test_raises_once_jax_has_computed():
    pytest.importorskip("jax")
    out = _run("late")
    assert "before the first JAX computation" in out.get("error", ""), out


def test_without_jax_imports_no_framework():
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from zoo.cpu_memory import "
        "keep_freed_memory; s = keep_freed_memory(jax=False); "
        "assert s == {'glibc': True, 'jax_synchronous_dispatch': False}, s; "
        "heavy = {'jax', 'torch', 'tensorflow', 'keras'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_backends_query_fallback_answers_not_known():
    pytest.importorskip("jax")
    from zoo import compat

    assert compat.jax_backends_initialized() in (True, False)
    with compat.forced_fallbacks():
        assert compat.jax_backends_initialized() is None
