"""Framework-free model configs and the variant registry.

A config is a frozen dataclass; every framework's model takes one (``SwinTransformer(config)``),
so a variant name means the same architecture in PyTorch, Keras and Flax. Nothing here imports a
deep-learning framework.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from zoo.registry import Registry

__all__ = [
    "SamConfig",
    "SwinConfig",
    "VideoSwinConfig",
    "ViTDetConfig",
    "VARIANTS",
    "Variant",
    "config_from_dict",
    "config_to_dict",
    "families",
    "MODEL_CLASSES",
    "parameter_count",
    "resolve",
]


@dataclass(frozen=True)
class SwinConfig:
    """Swin Transformer (2D) as in the official classification code.

    Input (reference): (B, in_chans, H, W); any H, W (padded to the patch, then per block to the
    window, as the official code does). ``features_only`` returns every stage's map, channels-last
    (B, H_i, W_i, C_i), instead of logits.

    ``window_rule`` is "pad" (``zoo.windows.WINDOW_RULES``): the window is kept, the map padded to
    it, and the shift dropped along an axis where one window covers the padded map. That is the
    official classification behaviour at every size where the official code can load the released
    window-7/12 tables (no stage map smaller than the window; a map equal to it runs unshifted),
    and torchvision's at every size. Where a map is smaller than the window the official 2D code
    would build a smaller table; we keep the table and pad, never reindex it.
    """

    patch_size: tuple[int, int] = (4, 4)
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: tuple[int, int] = (7, 7)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.2
    patch_norm: bool = True
    window_rule: str = "pad"
    img_size: int = 224  # the resolution the variant was trained at; any size runs
    features_only: bool = False

    @property
    def family(self) -> str:
        return "swin"

    @property
    def spatial_rank(self) -> int:
        return 2

    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    def shift_size(self) -> tuple[int, ...]:
        return tuple(w // 2 for w in self.window_size)

    def drop_path_rates(self) -> list[list[float]]:
        """Stochastic depth rising linearly over all blocks, grouped by stage."""
        total = sum(self.depths)
        rates = [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        out, start = [], 0
        for d in self.depths:
            out.append(rates[start : start + d])
            start += d
        return out


@dataclass(frozen=True)
class VideoSwinConfig(SwinConfig):
    """Video Swin Transformer (3D) backbone with the I3D head, as in the official repository.

    Input (reference): (B, in_chans, T, H, W); any T, H, W. ``features_only`` returns every stage's
    map, channels-last (B, T_i, H_i, W_i, C_i).
    """

    patch_size: tuple[int, int, int] = (2, 4, 4)
    num_classes: int = 400
    window_size: tuple[int, int, int] = (8, 7, 7)
    window_rule: str = "shrink"  # Video Swin's get_window_size: the window shrinks to the map
    head_dropout: float = 0.5
    frames: int = 32  # the clip length the variant was trained with; any length runs

    @property
    def family(self) -> str:
        return "video_swin"

    @property
    def spatial_rank(self) -> int:
        return 3


@dataclass(frozen=True)
class SamConfig:
    """Segment Anything: ViTDet-style image encoder, prompt encoder and mask decoder, as in the
    ``segment-anything`` package (``build_sam_vit_{b,l,h}``).

    Image encoder input (reference): (B, in_chans, img_size, img_size), already normalized and
    padded (the predictor does that); output (B, out_chans, img_size / patch, img_size / patch).
    ``encoder_only`` builds the image encoder alone (timm ``samvit_*`` checkpoints hold only it).
    """

    img_size: int = 1024
    patch_size: int = 16
    in_chans: int = 3
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    use_abs_pos: bool = True
    use_rel_pos: bool = True
    out_chans: int = 256  # the neck's output = the prompt embedding dim
    mask_in_chans: int = 16
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    transformer_depth: int = 2
    transformer_mlp_dim: int = 2048
    transformer_num_heads: int = 8
    attention_downsample_rate: int = 2
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    mask_threshold: float = 0.0
    encoder_only: bool = False

    @property
    def family(self) -> str:
        return "sam_image_encoder" if self.encoder_only else "sam"

    @property
    def spatial_rank(self) -> int:
        return 2

    @property
    def prompt_embed_dim(self) -> int:
        return self.out_chans

    @property
    def image_embedding_size(self) -> int:
        return self.img_size // self.patch_size


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
    drop_path_rate: float = 0.1
    window_size: int = 14
    window_block_indexes: tuple[int, ...] = (0, 1, 3, 4, 6, 7, 9, 10)
    use_abs_pos: bool = True
    use_rel_pos: bool = True
    pretrain_img_size: int = 224
    pretrain_use_cls_token: bool = True
    out_channels: int = 256
    scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    top_block: bool = True  # LastLevelMaxPool: p6 = max pool (kernel 1, stride 2) of p5
    square_pad: int = 1024

    @property
    def family(self) -> str:
        return "vitdet"

    @property
    def spatial_rank(self) -> int:
        return 2

    def stage_names(self) -> list[str]:
        """``simfp_<log2 stride>`` of every pyramid scale: (4, 2, 1, 0.5) at patch 16 -> simfp_2..5
        (detectron2's attribute names, so the checkpoint keys)."""
        import math

        return [f"simfp_{int(math.log2(int(self.patch_size / s)))}" for s in self.scale_factors]

    def drop_path_rates(self) -> list[float]:
        """Stochastic depth rising linearly over the blocks (detectron2 ``ViT``)."""
        return [self.drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]


Config = SwinConfig | SamConfig | ViTDetConfig

_CONFIGS = {
    "SwinConfig": SwinConfig,
    "VideoSwinConfig": VideoSwinConfig,
    "SamConfig": SamConfig,
    "ViTDetConfig": ViTDetConfig,
}

#: family -> the model class built from its config (same class name in every framework)
MODEL_CLASSES = {
    "swin": "SwinTransformer",
    "video_swin": "VideoSwin",
    "sam": "Sam",
    "sam_image_encoder": "ImageEncoderViT",
    "vitdet": "SimpleFeaturePyramid",
}


def parameter_count(config: Config) -> int:
    """Number of parameters (and stored buffers) of the model ``config`` describes, no framework
    needed: the sum over ``zoo.shapes.reference_shapes``."""
    from zoo.shapes import reference_shapes

    total = 0
    for shape in reference_shapes(config).values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def config_to_dict(config: Config) -> dict[str, Any]:
    """JSON-friendly dict with the class name, for saved models and the CLI."""
    return {"class": type(config).__name__, **dataclasses.asdict(config)}


def config_from_dict(data: dict[str, Any]) -> Config:
    data = dict(data)
    cls = _CONFIGS[data.pop("class")]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class Variant:
    """A named architecture: the model class (same name in every framework) and its config."""

    name: str
    model: str
    config: Config
    description: str = ""


VARIANTS: Registry[Variant] = Registry("variant")

_SIZES = {
    # size: (embed_dim, depths, num_heads, 2D drop_path_rate, 3D drop_path_rate)
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2, 0.1),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3, 0.2),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5, 0.3),
    "large": (192, (2, 2, 18, 2), (6, 12, 24, 48), 0.5, 0.3),
}

for _size, (_dim, _depths, _heads, _dpr2, _dpr3) in _SIZES.items():
    for _window, _img in ((7, 224), (12, 384)):
        _name = f"swin_{_size}_patch4_window{_window}_{_img}"
        VARIANTS.register(
            _name,
            Variant(
                _name,
                "SwinTransformer",
                SwinConfig(
                    embed_dim=_dim,
                    depths=_depths,
                    num_heads=_heads,
                    window_size=(_window, _window),
                    drop_path_rate=_dpr2,
                    img_size=_img,
                ),
                f"Swin-{_size[0].upper()} 2D, window {_window} at {_img}, ImageNet-1k head",
            ),
        )

for _size, (_dim, _depths, _heads, _dpr2, _dpr3) in _SIZES.items():
    _name = f"video_swin_{_size}"
    VARIANTS.register(
        _name,
        Variant(
            _name,
            "VideoSwin",
            VideoSwinConfig(embed_dim=_dim, depths=_depths, num_heads=_heads, drop_path_rate=_dpr3),
            f"Video Swin-{_size[0].upper()}, patch 2x4x4, window 8x7x7, Kinetics-400 head",
        ),
    )

_SAM_SIZES = {
    # size: (embed_dim, depth, num_heads, global attention block indexes)
    "b": (768, 12, 12, (2, 5, 8, 11)),
    "l": (1024, 24, 16, (5, 11, 17, 23)),
    "h": (1280, 32, 16, (7, 15, 23, 31)),
}
_LONG = {"b": "base", "l": "large", "h": "huge"}

for _size, (_dim, _depth, _heads, _global) in _SAM_SIZES.items():
    _sam = SamConfig(
        encoder_embed_dim=_dim,
        encoder_depth=_depth,
        encoder_num_heads=_heads,
        encoder_global_attn_indexes=_global,
    )
    VARIANTS.register(
        f"sam_vit_{_size}",
        Variant(
            f"sam_vit_{_size}",
            "Sam",
            _sam,
            f"Segment Anything ViT-{_size.upper()}: image encoder, prompt encoder, mask decoder",
        ),
    )
    VARIANTS.register(
        f"samvit_{_LONG[_size]}_patch16",
        Variant(
            f"samvit_{_LONG[_size]}_patch16",
            "ImageEncoderViT",
            dataclasses.replace(_sam, encoder_only=True),
            f"Segment Anything ViT-{_size.upper()} image encoder alone (timm samvit_*)",
        ),
    )
    _vitdet = ViTDetConfig(
        embed_dim=_dim,
        depth=_depth,
        num_heads=_heads,
        drop_path_rate={"b": 0.1, "l": 0.4, "h": 0.5}[_size],
        window_block_indexes=tuple(i for i in range(_depth) if i not in _global),
    )
    VARIANTS.register(
        f"vitdet_{_LONG[_size]}",
        Variant(
            f"vitdet_{_LONG[_size]}",
            "SimpleFeaturePyramid",
            _vitdet,
            f"ViTDet ViT-{_size.upper()} backbone with the simple feature pyramid (p2-p6)",
        ),
    )


def resolve(name: str, **overrides: Any) -> tuple[str, Config]:
    """(model class name, config) of the registered variant ``name``, config fields replaced by
    ``overrides``: what every framework's ``create_model`` builds."""
    variant = VARIANTS[name]
    return variant.model, dataclasses.replace(variant.config, **overrides)


def families() -> dict[str, list[str]]:
    """Family -> variant names."""
    out: dict[str, list[str]] = {}
    for name, v in VARIANTS.items():
        out.setdefault(v.config.family, []).append(name)
    return out
