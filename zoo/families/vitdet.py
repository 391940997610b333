"""ViTDet backbone with the simple feature pyramid: config, variants, state-dict table, inputs.
Framework-free.

The model is ``SimpleFeaturePyramid`` in ``zoo.models.vitdet`` and both ports; the detectron2
checkpoint layout is in ``weight_convert.layouts.vitdet``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from zoo import shape_table as T
from zoo.config_checks import ConfigError, positive
from zoo.families.sam import LONG, SIZES, validate_vit
from zoo.family import NOT_ARCH, Family, Input, image_input, register_family, register_variant

__all__ = ["ViTDetConfig"]


@dataclass(frozen=True)
class ViTDetConfig:
    """ViTDet backbone (detectron2 ``ViT``) with its simple feature pyramid
    (``SimpleFeaturePyramid``), as in detectron2's COCO Mask R-CNN ViTDet configs.

    Input (reference): (B, in_chans, H, W), normalized; H, W multiples of 16 (detectron2 pads to
    ``square_pad``). The absolute position embedding, trained at ``pretrain_img_size`` with a class
    token, is interpolated to the input grid. Output: the pyramid maps p2..p6 (strides 4..64),
    channels-first in the reference, channels-last in the ports.
    """

    img_size: int = 1024
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = field(default=0.1, metadata=NOT_ARCH)
    window_size: int = 14
    window_block_indexes: tuple[int, ...] = (0, 1, 3, 4, 6, 7, 9, 10)
    use_abs_pos: bool = True
    use_rel_pos: bool = True
    pretrain_img_size: int = 224
    pretrain_use_cls_token: bool = True
    out_channels: int = 256
    scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    top_block: bool = True  # LastLevelMaxPool: p6 = max pool (kernel 1, stride 2) of p5
    square_pad: int = field(default=1024, metadata=NOT_ARCH)

    @property
    def family(self) -> str:
        return "vitdet"

    def stage_names(self) -> list[str]:
        """``simfp_<log2 stride>`` of every pyramid scale: (4, 2, 1, 0.5) at patch 16 -> simfp_2..5
        (detectron2's attribute names, so the checkpoint keys)."""
        return [f"simfp_{int(math.log2(int(self.patch_size / s)))}" for s in self.scale_factors]

    def drop_path_rates(self) -> list[float]:
        """Stochastic depth rising linearly over the blocks (detectron2 ``ViT``)."""
        return [self.drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]


def _shapes(config: ViTDetConfig) -> T.Shapes:
    net: T.Shapes = {}
    e, grid = config.embed_dim, config.img_size // config.patch_size
    if config.use_abs_pos:
        tokens = (config.pretrain_img_size // config.patch_size) ** 2
        net["net.pos_embed"] = (1, tokens + int(config.pretrain_use_cls_token), e)
    T.conv(net, "net.patch_embed.proj", config.in_chans, e, config.patch_size)
    T.vit_blocks(
        net,
        "net.",
        e,
        config.depth,
        config.num_heads,
        config.mlp_ratio,
        config.qkv_bias,
        grid if config.use_rel_pos else None,
        config.window_size,
        set(range(config.depth)) - set(config.window_block_indexes),
        ("fc1", "fc2"),
    )
    out: T.Shapes = {}  # detectron2 registers the pyramid stages before ``net``
    c = config.out_channels
    for name, scale in zip(config.stage_names(), config.scale_factors, strict=True):
        stage = f"{name}."
        if scale == 4.0:
            T.conv_transpose(out, stage + "0", e, e // 2, 2)
            T.norm(out, stage + "1", e // 2)
            T.conv_transpose(out, stage + "3", e // 2, e // 4, 2)
            dim, first = e // 4, 4
        elif scale == 2.0:
            T.conv_transpose(out, stage + "0", e, e // 2, 2)
            dim, first = e // 2, 1
        elif scale == 1.0:
            dim, first = e, 0
        elif scale == 0.5:
            dim, first = e, 1  # index 0 is the max pool
        else:
            raise ValueError(f"scale factor {scale} is not supported")
        T.conv(out, f"{stage}{first}", dim, c, 1, bias=False)
        T.norm(out, f"{stage}{first}.norm", c)
        T.conv(out, f"{stage}{first + 1}", c, c, 3, bias=False)
        T.norm(out, f"{stage}{first + 1}.norm", c)
    return {**out, **net}


#: the pyramid stages a scale factor can name (``zoo.models.vitdet._stage``)
SCALES = (4.0, 2.0, 1.0, 0.5)


def _validate(config: ViTDetConfig) -> None:
    validate_vit(config, "embed_dim", "depth", "num_heads", "window_block_indexes")
    positive(config, "out_channels", "pretrain_img_size")
    if config.use_abs_pos and config.pretrain_img_size < config.patch_size:
        raise ConfigError(
            f"config field pretrain_img_size: {config.pretrain_img_size} is smaller than one "
            f"patch ({config.patch_size})"
        )
    scales = config.scale_factors
    if not scales or len(set(scales)) != len(scales) or not set(scales) <= set(SCALES):
        raise ConfigError(f"config field scale_factors: {scales} are not distinct ones of {SCALES}")
    for s in scales:
        stride = config.patch_size / s
        if not stride.is_integer() or int(stride) & (int(stride) - 1):
            raise ConfigError(
                f"config field scale_factors: {s} gives stride {stride} at patch "
                f"{config.patch_size}, no power of 2"
            )
        if config.embed_dim % (s if s > 1 else 1):
            raise ConfigError(f"config field embed_dim: {config.embed_dim} does not split by {s}")
    if config.top_block and "simfp_5" not in config.stage_names():
        raise ConfigError("config field top_block: needs the stride-32 stage (scale factor 0.5)")


def _inputs(config: ViTDetConfig, shape: Sequence[int] | None) -> tuple[Input, ...]:
    return (image_input(config, shape, rank=2),)


register_family(
    Family(
        name="vitdet",
        config=ViTDetConfig,
        model="SimpleFeaturePyramid",
        shapes=_shapes,
        inputs=_inputs,
        validate=_validate,
        description="ViTDet backbone with the simple feature pyramid (p2-p6)",
        # two blocks (one windowed, one global), every pyramid stage, the position embedding
        # resized from 4 x 4 (+ class token) to the 8 x 8 grid
        tiny=ViTDetConfig(
            img_size=128,
            embed_dim=64,
            depth=2,
            num_heads=4,
            window_size=4,
            window_block_indexes=(0,),
            pretrain_img_size=64,
            out_channels=32,
        ),
    )
)

for _size, (_dim, _depth, _heads, _global) in SIZES.items():
    register_variant(
        f"vitdet_{LONG[_size]}",
        ViTDetConfig(
            embed_dim=_dim,
            depth=_depth,
            num_heads=_heads,
            drop_path_rate={"b": 0.1, "l": 0.4, "h": 0.5}[_size],
            window_block_indexes=tuple(i for i in range(_depth) if i not in _global),
        ),
        f"ViTDet ViT-{_size.upper()} backbone with the simple feature pyramid (p2-p6)",
    )
