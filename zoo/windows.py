"""Framework-free window geometry: sizes, padding, relative-position tables and shift masks.

Everything here depends only on static shapes, so it is plain Python / NumPy, computed once per
shape (``functools.lru_cache``) and shared by the PyTorch reference and both ports. Under ``jit``
the tables become constants; no framework ever recomputes them from tensor values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np

__all__ = [
    "WINDOW_RULES",
    "grid_centres",
    "MASK_VALUE",
    "to_tuple",
    "get_window_size",
    "effective_window",
    "pad_amounts",
    "relative_position_index",
    "bias_table_size",
    "WINDOW_BUFFERS",
    "check_window_buffer",
    "shifted_window_mask",
    "rel_pos_gather_index",
    "rel_pos_resize_matrix",
]

#: Value the official Swin code puts in the attention mask between tokens of different regions.
MASK_VALUE = -100.0


def to_tuple(value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """``7 -> (7, 7)``; a sequence must already have ``ndim`` entries."""
    if isinstance(value, int):
        return (value,) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"expected {ndim} values, got {value}")
    return value


def get_window_size(
    input_size: Sequence[int], window_size: Sequence[int], shift_size: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Video Swin's rule: along an axis where the input is not larger than the window,
    the window shrinks to the input and the shift is dropped."""
    window, shift = list(window_size), list(shift_size)
    for i, size in enumerate(input_size):
        if size <= window_size[i]:
            window[i] = size
            shift[i] = 0
    return tuple(window), tuple(shift)


def _pad_rule(input_size, window_size, shift_size):
    """torchvision's 2D rule: keep the window, pad up to it, drop the shift along an axis whose
    padded size fits in one window."""
    padded = [math.ceil(s / w) * w for s, w in zip(input_size, window_size, strict=False)]
    shift = tuple(
        0 if w >= p else s for w, p, s in zip(window_size, padded, shift_size, strict=False)
    )
    return tuple(window_size), shift


def _pad_shift_rule(input_size, window_size, shift_size):
    """mmdetection / mmsegmentation's 2D rule (their ``ShiftWindowMSA``, as the official Swin
    detection code): keep the window, pad up to it, and keep the shift even along an axis whose
    padded size fits in one window (the shift mask then splits that window)."""
    return tuple(window_size), tuple(shift_size)


#: Named rules deciding the window and shift actually used for a given input size.
WINDOW_RULES = {"shrink": get_window_size, "pad": _pad_rule, "pad_shift": _pad_shift_rule}


def effective_window(
    input_size: Sequence[int],
    window_size: Sequence[int],
    shift_size: Sequence[int],
    rule: str = "shrink",
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Window and shift used for ``input_size`` under the named rule (see ``WINDOW_RULES``)."""
    try:
        fn = WINDOW_RULES[rule]
    except KeyError:
        raise ValueError(f"unknown window rule {rule!r}; known: {sorted(WINDOW_RULES)}") from None
    return fn(tuple(input_size), tuple(window_size), tuple(shift_size))


def pad_amounts(size: Sequence[int], multiple: Sequence[int]) -> tuple[int, ...]:
    """Padding to add at the end of each axis to make ``size`` a multiple of ``multiple``."""
    return tuple((-s) % m for s, m in zip(size, multiple, strict=False))


def bias_table_size(window_size: Sequence[int]) -> int:
    """Rows of the relative position bias table: prod(2 * w - 1)."""
    return int(np.prod([2 * w - 1 for w in window_size]))


@cache
def relative_position_index(window_size: tuple[int, ...]) -> np.ndarray:
    """Index into the bias table for every (query, key) pair of a window, shape (N, N), N = prod(w).

    Swin (2D) and Video Swin (3D) semantics: the relative offset along each axis is shifted to be
    non-negative and the axes are combined in row-major order with radix ``2 * w - 1``.
    """
    coords = np.stack(np.meshgrid(*[np.arange(w) for w in window_size], indexing="ij"))
    coords = coords.reshape(len(window_size), -1)  # (ndim, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (ndim, N, N)
    index = np.zeros(rel.shape[1:], dtype=np.int64)
    for axis, w in enumerate(window_size):
        index = index * (2 * w - 1) + (rel[axis] + w - 1)
    index.setflags(write=False)
    return index


#: Buffers the official Swin checkpoints carry that the window defines (never learned):
#: ``relative_position_index`` of every block's attention, ``attn_mask`` of 2D shifted blocks.
WINDOW_BUFFERS = ("relative_position_index", "attn_mask")


def check_window_buffer(
    buffer: str,
    value: Any,
    window: Sequence[int],
    where: str | None = None,
    read: Callable[[Any], Any] = np.asarray,
) -> None:
    """Raise ``ValueError`` (naming ``where``, default ``buffer``) unless ``value`` is the
    ``buffer`` (one of ``WINDOW_BUFFERS``) that ``window`` defines, N = prod(window) tokens:

    - ``relative_position_index``: equal to ``relative_position_index(window)``, as (N, N)
      (official, torchvision 3D) or flattened (N * N,) (torchvision 2D);
    - ``attn_mask``: shape (..., N, N); only the shape is checked (its windows depend on the
      resolution it was made at).

    The shape (``value.shape``) is compared first; ``read(value)`` (an array) is called only
    for an index of the right shape, so a file claiming gigabytes there is refused unread.
    """
    window = tuple(int(w) for w in window)
    name = buffer if where is None else where
    shape = tuple(int(d) for d in np.shape(value))
    n = int(np.prod(window))
    if buffer == "relative_position_index":
        if shape not in ((n, n), (n * n,)) or not np.array_equal(
            np.asarray(read(value)).reshape(n, n), relative_position_index(window)
        ):
            raise ValueError(
                f"{name} (shape {shape}) is not the relative position index of window {window} "
                f"(({n}, {n}) or ({n * n},)): not a Swin checkpoint or a modified one"
            )
    elif buffer == "attn_mask":
        if shape[-2:] != (n, n):
            raise ValueError(f"{name} has shape {shape}; window {window} needs (..., {n}, {n})")
    else:
        raise ValueError(f"{buffer!r} is not a window buffer (known: {', '.join(WINDOW_BUFFERS)})")


def _partition_labels(labels: np.ndarray, window: tuple[int, ...]) -> np.ndarray:
    """(*padded) -> (num_windows, prod(window)) in the same order as ``window_partition``."""
    shape = []
    for size, w in zip(labels.shape, window, strict=False):
        shape += [size // w, w]
    nd = len(window)
    x = labels.reshape(shape).transpose([2 * i for i in range(nd)] + [2 * i + 1 for i in range(nd)])
    return x.reshape(-1, int(np.prod(window)))


@cache
def shifted_window_mask(
    padded_size: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...]
) -> np.ndarray | None:
    """Additive attention mask for shifted windows, shape (num_windows, N, N), or ``None`` when
    nothing is shifted.

    Regions are labelled with the official slices ``[0:-w], [-w:-s], [-s:]`` per axis, applied in
    order, so an axis with zero shift forms a single region, exactly as in Swin and Video Swin.
    Tokens from different regions get ``MASK_VALUE``.
    """
    if not any(shift):
        return None
    labels = np.zeros(padded_size, dtype=np.int64)
    count = 0
    per_axis = [
        (slice(0, -w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift, strict=False)
    ]
    for region in np.ndindex(*(3,) * len(window)):
        labels[tuple(per_axis[a][r] for a, r in enumerate(region))] = count
        count += 1
    windows = _partition_labels(labels, window)
    mask = np.where(windows[:, None, :] != windows[:, :, None], MASK_VALUE, 0.0).astype(np.float32)
    mask.setflags(write=False)
    return mask


@cache
def rel_pos_gather_index(q_size: int, k_size: int) -> np.ndarray:
    """Rows of the (resized) decomposed relative-position table used for each (query, key) pair,
    shape (q_size, k_size); segment-anything ``get_rel_pos`` semantics, including the scaling when
    query and key lengths differ."""
    q_coords = np.arange(q_size, dtype=np.float32)[:, None] * max(k_size / q_size, 1.0)
    k_coords = np.arange(k_size, dtype=np.float32)[None, :] * max(q_size / k_size, 1.0)
    rel = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    index = rel.astype(np.int64)
    index.setflags(write=False)
    return index


@cache
def rel_pos_resize_matrix(length: int, target: int, dtype: Any = np.float32) -> np.ndarray:
    """Matrix M, shape (target, length), with ``M @ table`` equal to 1-D linear interpolation of
    ``table`` (length, C) to ``target`` rows, as ``F.interpolate(mode="linear",
    align_corners=False)`` does it (half-pixel centres, clamped at the borders) on a ``dtype``
    table (PyTorch computes the weights in float64 for a float64 table, else in float32)."""
    t = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    # PyTorch computes scale = in / out in the table's precision and the source position as one
    # fused multiply-add (a single rounding to it), then the weight as a difference in it.
    scale = np.float64(t(length) / t(target))
    src = ((np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5).astype(t)
    src = np.maximum(src, t(0.0))
    lo = np.minimum(np.floor(src).astype(np.int64), length - 1)
    hi = np.minimum(lo + 1, length - 1)
    frac = np.minimum(np.maximum(src - lo.astype(t), t(0.0)), t(1.0))
    m = np.zeros((target, length), dtype=t)
    rows = np.arange(target)
    np.add.at(m, (rows, lo), t(1.0) - frac)
    np.add.at(m, (rows, hi), frac)
    m.setflags(write=False)
    return m


def grid_centres(size: tuple[int, int], dtype: Any = np.float32) -> np.ndarray:
    """Normalized (x, y) centres of an (H, W) grid of cells, (H, W, 2) in ``dtype`` (float32;
    float64 in float64 runs): SAM's dense positional-encoding grid (the reference computes the
    same in torch)."""
    h, w = size
    t = np.dtype(dtype).type
    ys = (np.arange(h, dtype=t) + t(0.5)) / t(h)
    xs = (np.arange(w, dtype=t) + t(0.5)) / t(w)
    return np.stack(np.broadcast_arrays(xs[None, :], ys[:, None]), axis=-1)
