"""Pooling, framework-free (NumPy only): what ``nn.MaxPool2d``'s arguments mean for the ports
(``pool_arguments``, ``pooled_size``) and adaptive average pooling as constant matrices.

``adaptive_avg_matrix(n, m)`` is the (m, n) matrix ``A`` with ``A @ x`` equal to
``torch.nn.functional.adaptive_avg_pool1d`` of ``x`` (n, ...) to m bins: bin ``i`` averages
rows ``floor(i * n / m)`` to ``ceil((i + 1) * n / m)`` (exclusive), PyTorch's start / end
formula. Bins overlap when m does not divide n and repeat rows when m > n (a map smaller than
the output). A map X (H, W) pools to (h, w) as ``A_h @ X @ A_w.T``, which is
``nn.AdaptiveAvgPool2d((h, w))``: the ports (``ports/*/layers/pool.py``) compute it with two
contractions, the same in every framework, and under ``jit`` the matrices are constants.
Equal sizes give the identity (skipped by the ports: exact).
"""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = ["adaptive_avg_matrix", "bins", "pool_arguments", "pooled_size"]


def bins(in_size: int, out_size: int) -> list[tuple[int, int]]:
    """(start, end) of every output bin, as PyTorch's adaptive pooling kernels compute them."""
    return [
        ((i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)) for i in range(out_size)
    ]


@cache
def adaptive_avg_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 averaging matrix (read-only; cast it to the data's dtype)."""
    in_size, out_size = int(in_size), int(out_size)
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for i, (start, end) in enumerate(bins(in_size, out_size)):
        m[i, start:end] = 1.0 / (end - start)
    m.setflags(write=False)
    return m


def pool_arguments(
    kernel_size: int, stride: int | None, padding: int, ceil_mode: bool, dilation: int
) -> tuple[int, int, int]:
    """(kernel, stride, padding) of ``nn.MaxPool2d``'s arguments (stride None: the kernel);
    ValueError for what the ports do not implement (ceil mode, dilation, non-square windows)
    and for the padding PyTorch refuses (above half the window)."""
    if ceil_mode or dilation != 1:
        raise ValueError("MaxPool2d: ceil_mode and dilation are not implemented (floor mode only)")
    if not isinstance(kernel_size, int) or not isinstance(padding, int):
        raise ValueError("MaxPool2d: square windows only (int kernel_size and padding)")
    stride = kernel_size if stride is None else stride
    if 2 * padding > kernel_size:
        raise ValueError(
            f"MaxPool2d: padding {padding} should be at most half of kernel_size {kernel_size}"
        )
    return kernel_size, stride, padding


def pooled_size(size: int | None, kernel: int, stride: int, padding: int) -> int | None:
    """Floor mode's output side: ``(size + 2 * padding - kernel) // stride + 1``."""
    return None if size is None else (size + 2 * padding - kernel) // stride + 1
