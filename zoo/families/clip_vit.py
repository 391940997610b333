"""CLIP's ViT image encoder (OpenAI CLIP ``model.py``'s ``VisionTransformer``): config, variants,
state-dict table, inputs, feature names. Framework-free.

conv1 (patch conv, no bias) -> class token prepended (``class_embedding``) -> +
``positional_embedding`` -> ``ln_pre`` -> ``transformer.resblocks.N`` (``ln_1``, ``attn``: one
fused ``in_proj`` of q, k, v and ``out_proj``; ``ln_2``, ``mlp``: ``c_fc``, QuickGELU
``x * sigmoid(1.702 x)``, ``c_proj``) -> ``ln_post`` -> the class token ``@ proj`` (a
(width, output_dim) matrix, not a Linear weight). The model is ``VisionTransformer`` in
``zoo.models.clip_vit`` and both ports; its layouts (OpenAI's and open_clip's ``visual.*``,
transformers' ``CLIPVisionModelWithProjection``) are in ``weight_convert.layouts.clip``.

CLIP resizes nothing: the token grid must be the trained one, (img_size // patch)^2 tokens, so
an image of any size that floors to that grid runs (225 x 239 at patch 16 is 14 x 14, as 224).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo import shape_table as T
from zoo.config_checks import ConfigError, divides, mlp_hidden, positive
from zoo.family import NOT_ARCH, Family, Input, image_input, register_family, register_variant
from zoo.preprocessing import CLIP_MEAN, CLIP_STD, check_preprocessing

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "ClipViTConfig",
    "check_grid",
    "feature_names",
]

# CLIP_MEAN / CLIP_STD (``zoo.preprocessing``, "clip"): every CLIP image encoder's input
# normalization (RGB in [0, 1], then (x - mean) / std; OpenAI CLIP's ``_transform``)


@dataclass(frozen=True)
class ClipViTConfig:
    """OpenAI CLIP's ``VisionTransformer(input_resolution, patch_size, width, layers, heads,
    output_dim)``; LayerNorm eps 1e-5, MLP ``mlp_ratio`` x width (4 in every OpenAI model).

    Input (reference): (B, in_chans, H, W) channels-first, normalized with ``CLIP_MEAN`` /
    ``CLIP_STD``, (H // patch_size, W // patch_size) the trained grid. Output: the image
    embedding (B, output_dim); with ``features``, a dict of the named outputs.
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    width: int = 768
    layers: int = 12
    #: in no tensor's shape: OpenAI's rule is width // 64 (``clip.model.CLIP``)
    heads: int = 12
    mlp_ratio: float = 4.0
    output_dim: int = 512
    #: the named outputs to return instead of the embedding (``features(config)`` lists them)
    features: tuple[str, ...] = field(default=(), metadata=NOT_ARCH)
    #: the input the weights expect (``zoo.preprocessing``): CLIP's mean and std
    preprocessing: str = field(default="clip", metadata=NOT_ARCH)

    @property
    def family(self) -> str:
        return "clip_vit"

    @property
    def grid(self) -> int:
        """Side of the token grid the positional embedding is trained for."""
        return self.img_size // self.patch_size

    @property
    def tokens(self) -> int:
        """Tokens of the sequence: the grid and the class token."""
        return self.grid**2 + 1


def feature_names(config: ClipViTConfig) -> tuple[str, ...]:
    """Every output a ``features`` config may name, in forward order: ``ln_pre``, each
    residual block's tokens (B, N, D), ``ln_post`` (every token normalized, (B, N, D)) and
    ``proj`` (the embedding, (B, output_dim))."""
    blocks = tuple(f"transformer.resblocks.{i}" for i in range(config.layers))
    return ("ln_pre", *blocks, "ln_post", "proj")


def _shapes(config: ClipViTConfig) -> T.Shapes:
    w, hidden = config.width, int(config.width * config.mlp_ratio)
    out: T.Shapes = {
        "class_embedding": (w,),
        "positional_embedding": (config.tokens, w),
        "proj": (w, config.output_dim),
    }
    T.conv(out, "conv1", config.in_chans, w, config.patch_size, bias=False)
    T.norm(out, "ln_pre", w)
    for i in range(config.layers):
        b = f"transformer.resblocks.{i}."
        out[b + "attn.in_proj_weight"] = (3 * w, w)
        out[b + "attn.in_proj_bias"] = (3 * w,)
        T.linear(out, b + "attn.out_proj", w, w)
        T.norm(out, b + "ln_1", w)
        T.linear(out, b + "mlp.c_fc", w, hidden)
        T.linear(out, b + "mlp.c_proj", hidden, w)
        T.norm(out, b + "ln_2", w)
    T.norm(out, "ln_post", w)
    return out


def _validate(config: ClipViTConfig) -> None:
    positive(config, "img_size", "patch_size", "in_chans", "width", "layers", "heads")
    positive(config, "output_dim")
    divides("heads", config.heads, config.width)
    mlp_hidden(config, config.width)
    if config.patch_size > config.img_size:
        raise ConfigError(f"config field patch_size: {config.patch_size} > img_size")
    if config.layers > 1024:
        raise ConfigError(f"config field layers: {config.layers} blocks (at most 1024)")
    check_preprocessing(config)


def _inputs(config: ClipViTConfig, shape: Sequence[int] | None) -> tuple[Input, ...]:
    return (image_input(config, shape, rank=2),)


def check_grid(model: Any, framework: str, x: Any, reduce, grid: int, unit: str) -> None:
    """``ValueError`` unless the image's (H, W), reduced by ``reduce(side)``, is ``grid`` x
    ``grid``: the positional embedding is trained for that grid and CLIP resizes nothing."""
    hw = tuple(x.shape[2:4] if framework == "torch" else x.shape[1:3])
    got = tuple(None if s is None else reduce(s) for s in hw)
    if any(g is not None and g != grid for g in got):
        size = model.config.img_size
        raise ValueError(
            f"{type(model).__name__}: a {hw[0]}x{hw[1]} image gives a {got[0]}x{got[1]} {unit} "
            f"but the positional embedding is trained for {grid}x{grid} (CLIP resizes nothing); "
            f"feed {size} x {size} images (or sizes that floor to the same grid)"
        )


def _check_inputs(model: Any, framework: str, x: Any, **reference: Any) -> None:
    """The image checks (rank, channels, dtype), then the token grid."""
    from zoo.validate import check_image

    config = model.config
    check_image(
        model,
        x.shape,
        x.dtype,
        framework=framework,
        channels=config.in_chans,
        spatial_rank=2,
        **reference,
    )
    check_grid(model, framework, x, lambda s: s // config.patch_size, config.grid, "token grid")


register_family(
    Family(
        name="clip_vit",
        config=ClipViTConfig,
        model="VisionTransformer",
        shapes=_shapes,
        inputs=_inputs,
        check_inputs=_check_inputs,
        validate=_validate,
        features=feature_names,
        description="CLIP's ViT image encoder (OpenAI's VisionTransformer: QuickGELU, fused "
        "in_proj, class token @ proj)",
        # 4 x 4 tokens of patch 8 and the class token, two heads of 64 (OpenAI's head width,
        # so the head count solved from the shapes is this one); odd sizes 39 x 33 floor to it
        tiny=ClipViTConfig(img_size=32, patch_size=8, width=128, layers=2, heads=2, output_dim=24),
    )
)

_OPENAI = "OpenAI CLIP"
for _name, _patch, _size, _width, _layers, _dim in (
    ("clip_vit_b32", 32, 224, 768, 12, 512),
    ("clip_vit_b16", 16, 224, 768, 12, 512),
    ("clip_vit_l14", 14, 224, 1024, 24, 768),
    ("clip_vit_l14_336", 14, 336, 1024, 24, 768),
):
    register_variant(
        _name,
        ClipViTConfig(
            img_size=_size,
            patch_size=_patch,
            width=_width,
            layers=_layers,
            heads=_width // 64,
            output_dim=_dim,
        ),
        f"{_OPENAI} ViT-{'B' if _width == 768 else 'L'}/{_patch}"
        f"{'@336px' if _size == 336 else ''} image encoder: {_size} px, width {_width}, "
        f"{_layers} blocks, embedding {_dim}",
    )
