"""Segment Anything: config, variants, state-dict tables, inputs and input checks of two families
that share ``SamConfig``. Framework-free.

- ``sam``: the whole model, ``Sam`` (image encoder, prompt encoder, mask decoder) in
  ``zoo.models.sam`` and both ports; inputs: image, point coordinates, point labels.
- ``sam_image_encoder`` (``encoder_only=True``): ``ImageEncoderViT`` alone, as timm's ``samvit_*``
  holds it; input: the image.

Checkpoint layouts (official segment-anything, timm samvit) are in ``weight_convert.layouts.sam``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo import shape_table as T
from zoo.config_checks import ConfigError, blocks, divides, in_range, mlp_hidden, positive
from zoo.family import NOT_ARCH, Family, Input, image_input, register_family, register_variant
from zoo.tensor_format import Format

__all__ = [
    "SIZES",
    "SamConfig",
    "image_encoder_shapes",
    "mask_decoder_arguments",
    "prompt_encoder_arguments",
    "validate_vit",
]


#: the deepest two-way transformer and IoU head a config may have (the released ones: 2 and 3)
MAX_DECODER_DEPTH = 64


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
    pixel_mean: tuple[float, float, float] = field(
        default=(123.675, 116.28, 103.53), metadata=NOT_ARCH
    )
    pixel_std: tuple[float, float, float] = field(
        default=(58.395, 57.12, 57.375), metadata=NOT_ARCH
    )
    mask_threshold: float = field(default=0.0, metadata=NOT_ARCH)
    encoder_only: bool = False

    @property
    def family(self) -> str:
        return "sam_image_encoder" if self.encoder_only else "sam"

    @property
    def prompt_embed_dim(self) -> int:
        return self.out_chans

    @property
    def image_embedding_size(self) -> int:
        return self.img_size // self.patch_size


def prompt_encoder_arguments(config: SamConfig) -> dict[str, Any]:
    """``PromptEncoder``'s keywords for ``config``: the same in the reference, both ports and
    segment-anything's own class."""
    grid, size = config.image_embedding_size, config.img_size
    return {
        "embed_dim": config.prompt_embed_dim,
        "image_embedding_size": (grid, grid),
        "input_image_size": (size, size),
        "mask_in_chans": config.mask_in_chans,
    }


def mask_decoder_arguments(config: SamConfig) -> dict[str, Any]:
    """``MaskDecoder``'s keywords for ``config`` (the reference's and both ports': the two-way
    transformer built inside from the ``transformer_*`` keywords)."""
    return {
        "transformer_dim": config.prompt_embed_dim,
        "num_multimask_outputs": config.num_multimask_outputs,
        "iou_head_depth": config.iou_head_depth,
        "iou_head_hidden_dim": config.iou_head_hidden_dim,
        "transformer_depth": config.transformer_depth,
        "transformer_num_heads": config.transformer_num_heads,
        "transformer_mlp_dim": config.transformer_mlp_dim,
        "attention_downsample_rate": config.attention_downsample_rate,
    }


def image_encoder_shapes(config: SamConfig, p: str = "") -> T.Shapes:
    """The image encoder's state-dict table under the prefix ``p``."""
    out: T.Shapes = {}
    e, grid = config.encoder_embed_dim, config.image_embedding_size
    if config.use_abs_pos:
        out[p + "pos_embed"] = (1, grid, grid, e)
    T.conv(out, p + "patch_embed.proj", config.in_chans, e, config.patch_size)
    T.vit_blocks(
        out,
        p,
        e,
        config.encoder_depth,
        config.encoder_num_heads,
        config.mlp_ratio,
        config.qkv_bias,
        grid if config.use_rel_pos else None,
        config.window_size,
        set(config.encoder_global_attn_indexes),
        ("lin1", "lin2"),
    )
    c = config.out_chans
    T.conv(out, p + "neck.0", e, c, 1, bias=False)
    T.norm(out, p + "neck.1", c)
    T.conv(out, p + "neck.2", c, c, 3, bias=False)
    T.norm(out, p + "neck.3", c)
    return out


def _attention(out: T.Shapes, key: str, dim: int, downsample: int) -> None:
    inner = dim // downsample
    for proj in ("q_proj", "k_proj", "v_proj"):
        T.linear(out, f"{key}.{proj}", dim, inner)
    T.linear(out, f"{key}.out_proj", inner, dim)


def _mlp(out: T.Shapes, key: str, i: int, hidden: int, o: int, depth: int) -> None:
    dims = [i] + [hidden] * (depth - 1) + [o]
    for n in range(depth):
        T.linear(out, f"{key}.layers.{n}", dims[n], dims[n + 1])


def _sam_shapes(config: SamConfig) -> T.Shapes:
    out = image_encoder_shapes(config, "image_encoder.")
    c, m = config.prompt_embed_dim, config.mask_in_chans
    p = "prompt_encoder."
    out[p + "pe_layer.positional_encoding_gaussian_matrix"] = (2, c // 2)
    for i in range(4):
        out[f"{p}point_embeddings.{i}.weight"] = (1, c)
    out[p + "not_a_point_embed.weight"] = (1, c)
    T.conv(out, p + "mask_downscaling.0", 1, m // 4, 2)
    T.norm(out, p + "mask_downscaling.1", m // 4)
    T.conv(out, p + "mask_downscaling.3", m // 4, m, 2)
    T.norm(out, p + "mask_downscaling.4", m)
    T.conv(out, p + "mask_downscaling.6", m, c, 1)
    out[p + "no_mask_embed.weight"] = (1, c)
    d = "mask_decoder."
    t, rate = d + "transformer.", config.attention_downsample_rate
    for i in range(config.transformer_depth):
        layer = f"{t}layers.{i}."
        _attention(out, layer + "self_attn", c, 1)
        T.norm(out, layer + "norm1", c)
        _attention(out, layer + "cross_attn_token_to_image", c, rate)
        T.norm(out, layer + "norm2", c)
        T.linear(out, layer + "mlp.lin1", c, config.transformer_mlp_dim)
        T.linear(out, layer + "mlp.lin2", config.transformer_mlp_dim, c)
        T.norm(out, layer + "norm3", c)
        T.norm(out, layer + "norm4", c)
        _attention(out, layer + "cross_attn_image_to_token", c, rate)
    _attention(out, t + "final_attn_token_to_image", c, rate)
    T.norm(out, t + "norm_final_attn", c)
    masks = config.num_multimask_outputs + 1
    out[d + "iou_token.weight"] = (1, c)
    out[d + "mask_tokens.weight"] = (masks, c)
    T.conv_transpose(out, d + "output_upscaling.0", c, c // 4, 2)
    T.norm(out, d + "output_upscaling.1", c // 4)
    T.conv_transpose(out, d + "output_upscaling.3", c // 4, c // 8, 2)
    for i in range(masks):
        _mlp(out, f"{d}output_hypernetworks_mlps.{i}", c, c, c // 8, 3)
    hidden, depth = config.iou_head_hidden_dim, config.iou_head_depth
    _mlp(out, d + "iou_prediction_head", c, hidden, masks, depth)
    return out


def validate_vit(config: Any, dim: str, depth: str, heads: str, indexes: str) -> None:
    """The ViTDet-style encoder's fields (SAM's, detectron2's): sizes, a token grid of at least
    one patch, heads dividing the width, the block indexes within the depth."""
    positive(config, "img_size", "patch_size", "in_chans", dim, heads)
    if config.img_size < config.patch_size:
        raise ConfigError(
            f"config field img_size: {config.img_size} is smaller than one patch "
            f"({config.patch_size})"
        )
    divides(heads, getattr(config, heads), getattr(config, dim))
    blocks(config, depth, indexes)
    mlp_hidden(config, getattr(config, dim))


def _validate(config: SamConfig) -> None:
    validate_vit(
        config,
        "encoder_embed_dim",
        "encoder_depth",
        "encoder_num_heads",
        "encoder_global_attn_indexes",
    )
    positive(config, "out_chans", "pixel_std")
    if config.encoder_only:
        return
    positive(config, "mask_in_chans", "num_multimask_outputs", "iou_head_depth")
    positive(config, "iou_head_hidden_dim", "transformer_depth", "transformer_mlp_dim")
    positive(config, "transformer_num_heads", "attention_downsample_rate")
    divides("out_chans", 8, config.out_chans)  # the decoder's upscaling to c / 8
    divides("mask_in_chans", 4, config.mask_in_chans)
    c, rate = config.out_chans, config.attention_downsample_rate
    divides("attention_downsample_rate", rate, c)
    divides("transformer_num_heads", config.transformer_num_heads, (c, c // rate))
    in_range(config, "transformer_depth", 1, MAX_DECODER_DEPTH)
    in_range(config, "iou_head_depth", 1, MAX_DECODER_DEPTH)


def _encoder_inputs(config: SamConfig, shape: Sequence[int] | None) -> tuple[Input, ...]:
    return (image_input(config, shape, rank=2),)


def _sam_inputs(config: SamConfig, shape: Sequence[int] | None) -> tuple[Input, ...]:
    """The image and two point prompts per image (one foreground, one background) inside it."""
    image = image_input(config, shape, rank=2)
    batch, size = image.shape[0], np.asarray(image.shape[-2:][::-1], np.float32)  # (W, H)

    def coords(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return (rng.uniform(0.05, 0.95, shape) * size).astype(np.float32)

    def labels(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return np.tile(np.array([[1, 0]], np.int32), (shape[0], 1))

    return (
        image,
        Input((batch, 2, 2), Format.CHANNELS_LAST, sample=coords, name="point_coords"),
        Input((batch, 2), Format.CHANNELS_LAST, sample=labels, name="point_labels"),
    )


def _check_image(model: Any, framework: str, images: Any, **reference: Any) -> None:
    """The image: (B, in_chans, S, S) channels-first in the reference, channels-last in the
    ports, floating, and, with the absolute position embedding, of the size that gives its token
    grid (``img_size``; the embedding is not resized)."""
    from zoo.validate import check_image

    config = model.config
    check_image(
        model,
        images.shape,
        images.dtype,
        framework=framework,
        channels=config.in_chans,
        spatial_rank=2,
        **reference,
    )
    hw = tuple(images.shape[2:] if framework == "torch" else images.shape[1:3])
    grid = tuple(None if s is None else s // config.patch_size for s in hw)
    pos = config.image_embedding_size
    if config.use_abs_pos and None not in grid and grid != (pos, pos):
        raise ValueError(
            f"{type(model).__name__}: the image gives a {grid[0]}x{grid[1]} token grid but "
            f"pos_embed is {pos}x{pos}; feed {config.img_size} x {config.img_size} images (the "
            "position embedding is not resized)"
        )


def _check_sam(model: Any, framework: str, images, coords, labels, **reference: Any) -> None:
    from zoo.validate import check_points

    _check_image(model, framework, images, **reference)
    name = type(model).__name__
    batch = images.shape[0]
    check_points(name, coords.shape, coords.dtype, labels.shape, labels.dtype, batch=batch)


#: two blocks (one windowed with padding: an 8 x 8 grid in windows of 3, one global); the
#: encoder alone leaves the decoder's fields at their defaults (no tensor shows them)
TINY_ENCODER = SamConfig(
    img_size=128,
    encoder_embed_dim=48,
    encoder_depth=2,
    encoder_num_heads=3,
    encoder_global_attn_indexes=(1,),
    window_size=3,
    out_chans=32,
    encoder_only=True,
)
#: the same encoder with a small decoder
TINY = dataclasses.replace(
    TINY_ENCODER,
    encoder_only=False,
    mask_in_chans=16,
    transformer_mlp_dim=64,
    iou_head_hidden_dim=32,
)

register_family(
    Family(
        name="sam",
        config=SamConfig,
        model="Sam",
        shapes=_sam_shapes,
        inputs=_sam_inputs,
        check_inputs=_check_sam,
        validate=_validate,
        description="Segment Anything: image encoder, prompt encoder, mask decoder",
        tiny=TINY,
    )
)
register_family(
    Family(
        name="sam_image_encoder",
        config=SamConfig,
        model="ImageEncoderViT",
        shapes=image_encoder_shapes,
        inputs=_encoder_inputs,
        check_inputs=_check_image,
        validate=_validate,
        description="Segment Anything's image encoder alone (timm samvit_*)",
        tiny=TINY_ENCODER,
    )
)

#: size: (embed_dim, depth, num_heads, global attention block indexes); ViTDet shares them
SIZES = {
    "b": (768, 12, 12, (2, 5, 8, 11)),
    "l": (1024, 24, 16, (5, 11, 17, 23)),
    "h": (1280, 32, 16, (7, 15, 23, 31)),
}
LONG = {"b": "base", "l": "large", "h": "huge"}

for _size, (_dim, _depth, _heads, _global) in SIZES.items():
    _sam = SamConfig(
        encoder_embed_dim=_dim,
        encoder_depth=_depth,
        encoder_num_heads=_heads,
        encoder_global_attn_indexes=_global,
    )
    register_variant(
        f"sam_vit_{_size}",
        _sam,
        f"Segment Anything ViT-{_size.upper()}: image encoder, prompt encoder, mask decoder",
    )
    register_variant(
        f"samvit_{LONG[_size]}_patch16",
        dataclasses.replace(_sam, encoder_only=True),
        f"Segment Anything ViT-{_size.upper()} image encoder alone (timm samvit_*)",
    )

#: a small SAM for 256 x 256 images (16 x 16 tokens), trained on synthetic scenes by
#: ``scripts/train_sam_shapes.py`` (weights: ``zoo/weights/sam_shapes.pth``): four encoder
#: blocks of width 128 (windows of 8, blocks 1 and 3 global), a 64-wide prompt encoder and
#: decoder. ``transformer_num_heads`` stays SAM's 8: no tensor shape shows it, and the
#: converter assumes 8 when it reads a checkpoint.
SAM_SHAPES = SamConfig(
    img_size=256,
    encoder_embed_dim=128,
    encoder_depth=4,
    encoder_num_heads=4,
    encoder_global_attn_indexes=(1, 3),
    window_size=8,
    out_chans=64,
    mask_in_chans=16,
    iou_head_hidden_dim=64,
    transformer_mlp_dim=256,
)
register_variant(
    "sam_shapes",
    SAM_SHAPES,
    "Segment Anything, small (256 input, ViT width 128, depth 4), trained on synthetic shapes",
)
