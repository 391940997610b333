"""Freed memory kept for reuse: JAX training on a Linux CPU without the kernel faulting its
temporaries in anew on every step.

XLA:CPU allocates one block for all of a compiled call's temporaries on every call and frees it
when the call is done (the PJRT CPU client: ``posix_memalign`` / ``free``, no pool): 1.4 GiB for
a Swin-T training step at batch 8. glibc serves a block over 32 MiB with a fresh ``mmap`` and
hands it back with ``munmap``, so on every call the kernel faults in and zeroes each of its
pages again: ~390 k page faults, 0.6 s of system time in a 1.6 s step on two cores.
TensorFlow's allocator keeps its memory; PyTorch faults in ~300 MiB per step.

``keep_freed_memory()`` has glibc keep what is freed for the next allocation: large blocks come
from the heap instead of their own mappings (``mallopt(M_MMAP_MAX, 0)``) and the heap's top is
never given back (``M_TRIM_THRESHOLD`` at its maximum); after the first few calls, while freed
blocks settle, each call's temporaries come from pages already faulted in. A thread's arena
still maps any block over its 64 MiB heap, so JAX's CPU client must allocate on the calling
thread, whose arena is the heap: synchronous dispatch (``jax_cpu_enable_async_dispatch=False``).
JAX reads that option when it makes its CPU client, so call ``keep_freed_memory()`` before the
first JAX computation; after it, the call raises instead of quietly doing nothing.

The price: the process keeps its peak memory for reuse (what is freed is never returned to the
system), and a JAX call returns once its result is ready (Python does not run ahead of the
computation). ``scripts/benchmark.py --train --keep-memory`` measures every implementation so.

Nothing here imports a deep-learning framework unless asked: ``jax`` is configured only when it
is installed (``jax=None``) or asked for (``jax=True``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import platform

__all__ = ["keep_freed_memory"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def _glibc_keep() -> bool:
    """glibc keeps freed blocks for reuse; ``False`` off glibc (nothing to set)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # -1 becomes SIZE_MAX in glibc's size_t threshold: the heap's top is never trimmed
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
    if not ok:
        raise OSError("glibc refused mallopt(M_MMAP_MAX / M_TRIM_THRESHOLD)")
    return True


def _jax_synchronous() -> bool:
    import jax

    from zoo import compat

    if not jax.config.read("jax_cpu_enable_async_dispatch"):
        return True
    if compat.jax_backends_initialized():
        raise RuntimeError(
            "keep_freed_memory() must run before the first JAX computation: JAX's CPU client "
            "is already made, with asynchronous dispatch (its temporaries are allocated on a "
            "worker thread, whose arena maps them anew on every call)"
        )
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True


def keep_freed_memory(jax: bool | None = None) -> dict[str, bool]:
    """Have this process reuse freed memory instead of faulting it in anew (see the module's
    docstring): glibc's ``mallopt`` settings, and JAX's synchronous CPU dispatch when ``jax`` is
    ``True``, or ``None`` and JAX is installed. Returns what was set:
    ``{"glibc": ..., "jax_synchronous_dispatch": ...}`` (``glibc`` is ``False`` off glibc).

    Raises ``RuntimeError`` when JAX has already run a computation with asynchronous dispatch
    (nothing is changed then)."""
    if jax is None:
        jax = importlib.util.find_spec("jax") is not None
    synchronous = _jax_synchronous() if jax else False
    return {"glibc": _glibc_keep(), "jax_synchronous_dispatch": synchronous}
