"""Window partition / reverse for 2D and 3D token maps (channels-last)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["window_partition", "window_reverse"]


def window_partition(x: torch.Tensor, window_size: Sequence[int]) -> torch.Tensor:
    """Split a token map into non-overlapping windows.

    Args:
        x: (B, *S, C), len(S) == len(window_size) (2 or 3), S[i] a multiple of window_size[i].
        window_size: (wh, ww) or (wd, wh, ww).
    Returns:
        (B * num_windows, *window_size, C), windows in row-major grid order per batch item.
    """
    b, *spatial, c = x.shape
    nd = len(window_size)
    shape = [b]
    for s, w in zip(spatial, window_size, strict=False):
        shape += [s // w, w]
    x = x.reshape(*shape, c)
    perm = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)] + [2 * nd + 1]
    return x.permute(perm).reshape(-1, *window_size, c)


def window_reverse(
    windows: torch.Tensor, window_size: Sequence[int], spatial_size: Sequence[int]
) -> torch.Tensor:
    """Inverse of ``window_partition``.

    Args:
        windows: (B * num_windows, *window_size, C).
        window_size: (wh, ww) or (wd, wh, ww).
        spatial_size: S, the (padded) size of the token map the windows came from.
    Returns:
        (B, *S, C).
    """
    nd = len(window_size)
    grid = [s // w for s, w in zip(spatial_size, window_size, strict=False)]
    c = windows.shape[-1]
    x = windows.reshape(-1, *grid, *window_size, c)
    perm = [0]
    for i in range(nd):
        perm += [1 + i, 1 + nd + i]
    perm.append(1 + 2 * nd)
    return x.permute(perm).reshape(-1, *spatial_size, c)
