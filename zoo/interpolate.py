"""Interpolation as constant matrices, framework-free (NumPy only).

``resize_matrix(n, m, mode)`` is the (m, n) matrix ``M`` with ``M @ x`` equal to resizing ``x``
(n, ...) to m rows the way ``torch.nn.functional.interpolate(..., align_corners=False,
antialias=False)`` does along one axis. The 2D modes are separable: a map X (H, W) resized to
(h, w) is ``M_h @ X @ M_w.T`` with ``M_h = resize_matrix(H, h, mode)`` and
``M_w = resize_matrix(W, w, mode)``. The matrices depend only on the sizes, so the reference and
both ports compute the same thing with two matmuls and no backend resize kernel, and under
``jit`` they are constants.

Positions and weights follow PyTorch's float32 CPU kernels: ``scale = in / out`` in float32,
source index ``(i + 0.5) * scale - 0.5`` rounded once, weights in float32 arithmetic; taps that
share a clamped border index are summed in float64. Cast to float32 and applied to float32 data
with |x| <= 1, the matrices reproduce ``F.interpolate`` to within 1e-6 (bilinear ~1e-7).
"""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = ["MODES", "BICUBIC_A", "linear_taps", "resize_matrix"]

#: Supported modes; "linear" and "bilinear" are the same matrix (one axis of a bilinear resize).
MODES = ("linear", "bilinear", "bicubic")

#: The cubic convolution coefficient PyTorch uses for ``mode="bicubic"``.
BICUBIC_A = -0.75


def _f32(x: np.ndarray | float) -> np.ndarray:
    """Round to float32 (kept as float64 for the next step)."""
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def _fma(a: np.ndarray, b: np.ndarray | float, c: np.ndarray | float) -> np.ndarray:
    """float32 fused multiply-add: ``a * b + c`` rounded once (a * b of float32 values is exact
    in float64)."""
    return _f32(np.float64(a) * b + c)


def _source_positions(in_size: int, out_size: int) -> np.ndarray:
    """Half-pixel source coordinate of every output index as PyTorch computes it in float32."""
    scale = _f32(np.float32(in_size) / np.float32(out_size))
    return _fma(np.arange(out_size, dtype=np.float64) + 0.5, scale, -0.5)


def _linear(in_size: int, out_size: int) -> np.ndarray:
    # Negative source positions are clamped to 0; the right neighbour is clamped to the border.
    src = np.maximum(_source_positions(in_size, out_size), 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = np.clip(src - lo, 0.0, 1.0)
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, lo), _f32(1.0 - frac))
    np.add.at(m, (rows, hi), frac)
    return m


@cache
def linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, ...]:
    """One axis of ``F.interpolate(mode="bilinear", align_corners=False)`` as gathers: output
    ``i`` is ``x[lo[i]] * w_lo[i] + x[hi[i]] * w_hi[i]`` (lo, hi int32; weights float32, as
    PyTorch's float32 CPU kernel computes them). For a 2D resize, apply it along the width
    first and then along the height: that is PyTorch's order of operations per pixel, and it
    costs two multiply-adds per output value where ``resize_matrix`` costs a matmul."""
    in_size, out_size = int(in_size), int(out_size)
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    src = np.maximum(_source_positions(in_size, out_size), 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = np.clip(src - lo, 0.0, 1.0)
    out = (lo.astype(np.int32), hi.astype(np.int32), _f32(1.0 - frac).astype(np.float32))
    out = (*out, frac.astype(np.float32))
    for a in out:
        a.setflags(write=False)
    return out


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Keys cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2 from floor(src) for
    fractional parts ``t`` (n,) -> (n, 4).

    Evaluated in float32 in PyTorch's order (Horner form, multiply-adds fused as its x86-64 CPU
    build does): the polynomials cancel digits, so PyTorch's float32 weights differ from the exact
    ones by up to ~5e-7, and matching its rounding keeps the resize within ~5e-7 of it.
    """
    a = BICUBIC_A

    def near(x):  # |x| <= 1: ((a + 2) x - (a + 3)) x^2 + 1
        return _fma(_f32(_fma(a + 2.0, x, -(a + 3.0)) * x), x, 1.0)

    def far(x):  # 1 < |x| < 2: ((a x - 5a) x + 8a) x - 4a
        return _fma(_fma(_fma(a, x, -5.0 * a), x, 8.0 * a), x, -4.0 * a)

    t = _f32(t)
    u = _f32(1.0 - t)
    return np.stack([far(_f32(t + 1.0)), near(t), near(u), far(_f32(u + 1.0))], axis=-1)


def _bicubic(in_size: int, out_size: int) -> np.ndarray:
    # No clamping of the source position for cubic; taps outside the input read the border.
    src = _source_positions(in_size, out_size)
    base = np.floor(src)
    weights = _cubic_weights(src - base)
    taps = np.clip(base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.repeat(np.arange(out_size), 4)
    np.add.at(m, (rows, taps.reshape(-1)), weights.reshape(-1))
    return m


_BUILDERS = {"linear": _linear, "bilinear": _linear, "bicubic": _bicubic}


@cache
def resize_matrix(in_size: int, out_size: int, mode: str) -> np.ndarray:
    """(out_size, in_size) float64 matrix resizing one axis like ``F.interpolate(mode=mode,
    align_corners=False)`` (read-only; cast it to the data's dtype).

    ``mode``: "linear" / "bilinear" (the same per axis) or "bicubic" (A = -0.75, border taps
    clamped). Equal sizes give the identity.
    """
    if mode not in _BUILDERS:
        raise ValueError(f"unknown interpolation mode {mode!r}; known: {', '.join(MODES)}")
    in_size, out_size = int(in_size), int(out_size)
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    m = np.eye(in_size) if in_size == out_size else _BUILDERS[mode](in_size, out_size)
    m.setflags(write=False)
    return m
