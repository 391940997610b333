"""Video Swin Transformer (3D) with the I3D head: config, variants, state-dict table, inputs.
Framework-free.

The model is ``VideoSwin`` in ``zoo.models.video_swin`` and both ports; its checkpoint layouts
(official mmaction2 releases, torchvision ``swin3d_*``) are in
``weight_convert.layouts.video_swin``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from zoo.config_checks import in_range, positive
from zoo.families.swin import SIZES, SwinConfig, swin_shapes, validate_swin
from zoo.family import HEAD, NOT_ARCH, Family, Input, image_input, register_family, register_variant

__all__ = ["RELEASES", "VideoSwinConfig"]


@dataclass(frozen=True)
class VideoSwinConfig(SwinConfig):
    """Video Swin Transformer (3D) backbone with the I3D head, as in the official repository.

    Input (reference): (B, in_chans, T, H, W); any T, H, W. ``features_only`` returns every stage's
    map, channels-last (B, T_i, H_i, W_i, C_i).
    """

    patch_size: tuple[int, int, int] = (2, 4, 4)
    num_classes: int = field(default=400, metadata=HEAD)
    window_size: tuple[int, int, int] = (8, 7, 7)
    # Video Swin's get_window_size: the window shrinks to the map
    window_rule: str = field(default="shrink", metadata=NOT_ARCH)
    head_dropout: float = field(default=0.5, metadata=NOT_ARCH)
    # the clip length the variant was trained with; any length runs
    frames: int = field(default=32, metadata=NOT_ARCH)

    @property
    def family(self) -> str:
        return "video_swin"


def _shapes(config: VideoSwinConfig):
    return swin_shapes(config, prefix="backbone.", head="cls_head.fc_cls")


def _validate(config: VideoSwinConfig) -> None:
    validate_swin(config)
    positive(config, "frames")
    in_range(config, "head_dropout", 0, 1, open_high=True)


def _inputs(config: VideoSwinConfig, shape: Sequence[int] | None) -> tuple[Input, ...]:
    return (image_input(config, shape, rank=3, frames=16),)


register_family(
    Family(
        name="video_swin",
        config=VideoSwinConfig,
        model="VideoSwin",
        shapes=_shapes,
        inputs=_inputs,
        validate=_validate,
        description="Video Swin Transformer (3D) with the I3D head",
        tiny=VideoSwinConfig(embed_dim=32, depths=(2, 2), num_heads=(1, 2), num_classes=10),
    )
)

for _size, (_dim, _depths, _heads, _, _dpr3) in SIZES.items():
    register_variant(
        f"video_swin_{_size}",
        VideoSwinConfig(embed_dim=_dim, depths=_depths, num_heads=_heads, drop_path_rate=_dpr3),
        f"Video Swin-{_size[0].upper()}, patch 2x4x4, window 8x7x7, Kinetics-400 head",
    )

#: The releases of SwinTransformer/Video-Swin-Transformer, each named ``video_`` + its file's
#: stem: (size, window, classes, drop_path_rate of its config, what it was trained on). The
#: drop-path rates are configs/recognition/swin/<stem>.py's; window1677_kinetics400_22k (the
#: Something-Something v2 initialization, linked from the README) has no config of its own:
#: its rate is the Kinetics-400 22k config's. Registered after ``video_swin_{size}``, which keep
#: their name for a checkpoint of their architecture and head (tiny / small / base are the
#: Kinetics-400 1k releases' architecture); detection names the alike releases in a note.
RELEASES = {
    "swin_tiny_patch244_window877_kinetics400_1k": ("tiny", 8, 400, 0.1, "K400, IN-1k init"),
    "swin_small_patch244_window877_kinetics400_1k": ("small", 8, 400, 0.1, "K400, IN-1k init"),
    "swin_base_patch244_window877_kinetics400_1k": ("base", 8, 400, 0.3, "K400, IN-1k init"),
    "swin_base_patch244_window877_kinetics400_22k": ("base", 8, 400, 0.2, "K400, IN-22k init"),
    "swin_base_patch244_window877_kinetics600_22k": ("base", 8, 600, 0.2, "K600, IN-22k init"),
    "swin_base_patch244_window1677_sthv2": ("base", 16, 174, 0.4, "SSv2, K400 init"),
    "swin_base_patch244_window1677_kinetics400_22k": ("base", 16, 400, 0.2, "K400, IN-22k init"),
}

for _stem, (_size, _t, _classes, _dpr, _data) in RELEASES.items():
    _dim, _depths, _heads, _, _ = SIZES[_size]
    register_variant(
        f"video_{_stem}",
        VideoSwinConfig(
            embed_dim=_dim,
            depths=_depths,
            num_heads=_heads,
            window_size=(_t, 7, 7),
            num_classes=_classes,
            drop_path_rate=_dpr,
        ),
        f"Video Swin-{_size[0].upper()}, window {_t}x7x7, {_classes} classes ({_data}): "
        f"release {_stem}.pth",
    )
