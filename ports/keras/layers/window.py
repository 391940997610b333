"""Window partition / reverse for 2D and 3D token maps (channels-last)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops

__all__ = ["Tensor", "window_partition", "window_reverse"]

#: A backend tensor (tf.Tensor, jax.Array, torch.Tensor) or a KerasTensor.
Tensor = Any


def window_partition(x: Tensor, window_size: Sequence[int]) -> Tensor:
    """Split a token map into non-overlapping windows.

    x: (B, *S, C) with len(S) == len(window_size) (2 or 3), each S[i] a multiple of window_size[i].
    Returns (B * num_windows, *window_size, C), windows in row-major grid order per batch item.
    """
    window_size = tuple(int(w) for w in window_size)
    _, *spatial, c = x.shape
    nd = len(window_size)
    shape = [-1]
    for s, w in zip(spatial, window_size, strict=True):
        shape += [s // w, w]
    x = ops.reshape(x, (*shape, c))
    perm = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)] + [2 * nd + 1]
    return ops.reshape(ops.transpose(x, perm), (-1, *window_size, c))


def window_reverse(
    windows: Tensor, window_size: Sequence[int], spatial_size: Sequence[int]
) -> Tensor:
    """Inverse of ``window_partition``.

    windows: (B * num_windows, *window_size, C); spatial_size: S, the (padded) size of the token
    map the windows came from. Returns (B, *S, C).
    """
    window_size = tuple(int(w) for w in window_size)
    spatial_size = tuple(int(s) for s in spatial_size)
    nd = len(window_size)
    grid = [s // w for s, w in zip(spatial_size, window_size, strict=True)]
    c = windows.shape[-1]
    x = ops.reshape(windows, (-1, *grid, *window_size, c))
    perm = [0]
    for i in range(nd):
        perm += [1 + i, 1 + nd + i]
    perm.append(1 + 2 * nd)
    return ops.reshape(ops.transpose(x, perm), (-1, *spatial_size, c))
