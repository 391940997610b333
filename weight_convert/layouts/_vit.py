"""Config inference shared by the families built of ViTDet-style blocks (SAM's image encoder,
detectron2's ViT): block count, heads, window and global blocks from the relative-position
tables, and small look-up helpers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from weight_convert.errors import LayoutError

__all__ = ["indices", "need", "vit_blocks"]


def indices(reference: Mapping[str, Any], prefix: str) -> list[int]:
    """Sorted distinct n of keys ``{prefix}{n}.*``."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in reference if (m := pattern.match(k))})


def need(reference: Mapping[str, Any], key: str) -> Any:
    """``reference[key]``; ``LayoutError`` naming it when absent."""
    if key not in reference:
        raise LayoutError(f"no {key}")
    return reference[key]


def vit_blocks(
    reference: Mapping[str, Any], p: str, dim: int, grid: int | None, default_window: int
) -> tuple[int, int | None, int, list[int], list[str]]:
    """(depth, heads or None, window, global block indexes, notes) of the blocks under
    ``{p}blocks.N`` from their relative-position tables: a global block's table spans the whole
    token grid (``grid``; None: the largest table's), a windowed one the window. Blocks without
    tables (no relative positions) leave the heads and the window unknown; some blocks with and
    some without is refused (``LayoutError``): which attend globally cannot be told."""
    blocks = indices(reference, p + "blocks.")
    if not blocks or blocks != list(range(len(blocks))):
        raise LayoutError(f"no contiguous {p}blocks.N")
    tables = {j: reference.get(f"{p}blocks.{j}.attn.rel_pos_h") for j in blocks}
    lacking = [j for j, t in tables.items() if t is None]
    if len(lacking) == len(blocks):
        return len(blocks), None, default_window, [], ["no relative positions: heads assumed"]
    if lacking:
        raise LayoutError(
            f"{p}blocks {lacking} have no attn.rel_pos_h but the other blocks have one: cannot "
            "tell which blocks attend globally (the tables' sizes decide it)"
        )
    sizes = [(int(t.shape[0]) + 1) // 2 for t in tables.values()]
    head_dim = int(tables[blocks[0]].shape[1])
    distinct = sorted(set(sizes))
    notes = []
    if grid is None:
        grid = distinct[-1]
    windows = [s for s in distinct if s != grid]
    if len(windows) > 1:
        raise LayoutError(f"relative-position tables of {len(distinct)} sizes {distinct}")
    window = windows[0] if windows else default_window
    if not windows and grid != default_window:
        notes.append("every block attends globally")
    if grid == window:
        raise LayoutError(f"window {window} equals the token grid: cannot tell global blocks")
    global_blocks = [j for j, s in zip(blocks, sizes, strict=True) if s == grid]
    return len(blocks), dim // head_dim, window, global_blocks, notes
