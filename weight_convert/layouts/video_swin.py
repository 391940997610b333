"""Video Swin Transformer (3D) checkpoint layouts.

``official``
    SwinTransformer/Video-Swin-Transformer (mmaction style, ``{'meta': ..., 'state_dict': sd}``
    with ``backbone.*`` / ``cls_head.*``): the reference's own keys, plus the window's
    ``relative_position_index`` buffers (checked and dropped when read, rebuilt when written).
``torchvision``
    ``torchvision.models.video.swin3d_t/s/b``.

The 3D window is solved from the bias table's rows and, where the checkpoint carries one, the
index's size; the released windows are preferred when the rows alone fit several. The released
tables themselves fit one (t, h, h) window each: 8 x 7 x 7 has 15 x 13^2 = 2535 rows and 16 x 7
x 7 (Something-Something v2) 31 x 13^2 = 5239, and 13^2 is the only odd square > 1 dividing
either; with an index, 392 and 784 tokens per window.
"""

from __future__ import annotations

from functools import partial

from weight_convert.errors import LayoutError
from weight_convert.layouts._registry import LayoutSpec, register_layouts
from weight_convert.layouts.swin import BLOCK, derived_buffers, infer_swin
from zoo.families.video_swin import VideoSwinConfig

#: Windows of the released Video Swin models, preferred when the bias table alone is ambiguous.
_OFFICIAL_3D_WINDOWS = ((8, 7, 7), (16, 7, 7))

_B = "backbone."


def _window_3d(rows: int, tokens: int | None, where: str) -> tuple[tuple[int, ...], str]:
    """(t, h, h) windows whose bias table has ``rows`` rows ((2t-1)(2h-1)^2) and, with the
    ``tokens`` per window of a relative_position_index, t * h * h tokens; one must remain (or
    one released window when there is no index)."""
    n = tokens
    if n is not None and n > rows:  # t*h*h <= (2t-1)(2h-1)^2: the index is not this table's
        raise LayoutError(
            f"{where}: relative_position_index of {n} tokens per window, more than the "
            f"{rows} bias-table rows allow"
        )
    found = []
    h = 2
    while (2 * h - 1) ** 2 <= rows:
        q, r = divmod(rows, (2 * h - 1) ** 2)
        if r == 0 and q % 2 == 1:
            win = ((q + 1) // 2, h, h)
            if n is None or win[0] * win[1] * win[2] == n:
                found.append(win)
        h += 1
    if len(found) == 1:
        note = "" if n is not None else f"window {found[0]} solved from the bias-table rows"
        return found[0], note
    official = [w for w in found if w in _OFFICIAL_3D_WINDOWS]
    if n is None and len(official) == 1:
        others = [w for w in found if w != official[0]]
        return official[0], f"window {official[0]} assumed (bias-table rows also fit {others})"
    raise LayoutError(
        f"{where}: cannot tell the 3D window from {rows} bias-table rows"
        + (f" and {n} tokens per window" if n else "")
        + f" (candidates {found or 'none'})"
    )


register_layouts(
    "video_swin",
    partial(
        infer_swin,
        config_class=VideoSwinConfig,
        prefix=_B,
        head="cls_head.fc_cls.",
        solve_window=_window_3d,
    ),
    [
        LayoutSpec(
            "official",
            "video_swin",
            (
                (_B + "patch_embed.", _B + "patch_embed."),
                (_B + BLOCK, _B + BLOCK),
                (_B + "layers.{i}.downsample.", _B + "layers.{i}.downsample."),
                (_B + "norm.", _B + "norm."),
                ("cls_head.fc_cls.", "cls_head.fc_cls."),
            ),
            derived_buffers(writes_index=True),
            wrapper="state_dict",  # mmaction's releases hold {'meta': ..., 'state_dict': sd}
        ),
        LayoutSpec(
            "torchvision",
            "video_swin",
            (
                (_B + "patch_embed.", "patch_embed."),
                (_B + BLOCK + "mlp.fc1.", "features.{2i}.{j}.mlp.0."),
                (_B + BLOCK + "mlp.fc2.", "features.{2i}.{j}.mlp.3."),
                (_B + BLOCK, "features.{2i}.{j}."),
                (_B + "layers.{i}.downsample.", "features.{2i+1}."),
                (_B + "norm.", "norm."),
                ("cls_head.fc_cls.", "head."),
            ),
            derived_buffers(writes_index=True),
        ),
    ],
)
