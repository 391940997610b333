"""Swin Transformer (2D): config, variants, state-dict table, inputs. Framework-free.

The model is ``SwinTransformer`` in ``zoo.models.swin`` and both ports; its checkpoint layouts
(official, torchvision, timm, huggingface, mmdetection) are in ``weight_convert.layouts.swin``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from zoo import shape_table as T
from zoo.config_checks import MAX_BLOCKS, ConfigError, divides, in_range, mlp_hidden, positive
from zoo.family import HEAD, NOT_ARCH, Family, Input, image_input, register_family, register_variant

__all__ = ["SIZES", "SwinConfig", "swin_shapes", "validate_swin"]

#: the most stages (each doubles the width) and window positions (the relative-position index
#: a block derives holds their square) a Swin config may have
MAX_STAGES, MAX_WINDOW_TOKENS = 8, 4096


@dataclass(frozen=True)
class SwinConfig:
    """Swin Transformer (2D) as in the official classification code.

    Input (reference): (B, in_chans, H, W); any H, W (padded to the patch, then per block to the
    window, as the official code does). ``features_only`` returns every stage's map, channels-last
    (B, H_i, W_i, C_i), instead of logits, the last one through ``norm``.

    ``out_indices`` (``features_only`` only): the stages whose maps are returned, each through a
    LayerNorm of its own, ``norm{i}``, which replaces the final ``norm``: the mmdetection /
    mmsegmentation Swin backbone (their ``out_indices``). ``merge_norm``: the patch merging
    normalizes its 4C channels before the reduction, as the official code always does;
    mmdetection / mmsegmentation drop that norm with the patch embedding's (``patch_norm=False``).

    ``window_rule`` is "pad" (``zoo.windows.WINDOW_RULES``): the window is kept, the map padded to
    it, and the shift dropped along an axis where one window covers the padded map. That is the
    official classification behaviour at every size where the official code can load the released
    window-7/12 tables (no stage map smaller than the window; a map equal to it runs unshifted),
    and torchvision's at every size. Where a map is smaller than the window the official 2D code
    would build a smaller table; we keep the table and pad, never reindex it. "pad_shift" keeps
    the shift there too, as mmdetection / mmsegmentation's backbone does.
    """

    patch_size: tuple[int, int] = (4, 4)
    in_chans: int = 3
    num_classes: int = field(default=1000, metadata=HEAD)  # the head: a variant override
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: tuple[int, int] = (7, 7)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = field(default=0.0, metadata=NOT_ARCH)
    attn_drop_rate: float = field(default=0.0, metadata=NOT_ARCH)
    drop_path_rate: float = field(default=0.2, metadata=NOT_ARCH)
    patch_norm: bool = True
    merge_norm: bool = True
    window_rule: str = field(default="pad", metadata=NOT_ARCH)
    # the resolution the variant was trained at; any size runs
    img_size: int = field(default=224, metadata=NOT_ARCH)
    features_only: bool = field(default=False, metadata=HEAD)
    # like features_only, the outputs (and their norms) of a backbone, not a variant's body
    out_indices: tuple[int, ...] = field(default=(), metadata=NOT_ARCH)

    @property
    def family(self) -> str:
        return "swin"

    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    def shift_size(self) -> tuple[int, ...]:
        return tuple(w // 2 for w in self.window_size)

    def output_norms(self) -> dict[str, int]:
        """The LayerNorms on the outputs, attribute name -> the stage they follow: ``norm{i}``
        for each of ``out_indices``, else the final ``norm``."""
        if self.out_indices:
            return {f"norm{i}": i for i in self.out_indices}
        return {"norm": len(self.depths) - 1}

    def drop_path_rates(self) -> list[list[float]]:
        """Stochastic depth rising linearly over all blocks, grouped by stage."""
        total = sum(self.depths)
        rates = [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        out, start = [], 0
        for d in self.depths:
            out.append(rates[start : start + d])
            start += d
        return out


def swin_shapes(config: SwinConfig, prefix: str = "", head: str = "head") -> T.Shapes:
    """The state-dict table of a Swin backbone under ``prefix`` and its classifier ``head``
    (none with ``features_only``): the 2D model's, and Video Swin's with its names."""
    p, out = prefix, {}
    e = config.embed_dim
    out[p + "patch_embed.proj.weight"] = (e, config.in_chans, *config.patch_size)
    out[p + "patch_embed.proj.bias"] = (e,)
    if config.patch_norm:
        T.norm(out, p + "patch_embed.norm", e)
    rows = int(np.prod([2 * w - 1 for w in config.window_size]))
    dims, n = config.stage_dims(), len(config.depths)
    for i, (d, depth, heads) in enumerate(zip(dims, config.depths, config.num_heads, strict=True)):
        hidden = int(d * config.mlp_ratio)
        for j in range(depth):
            b = f"{p}layers.{i}.blocks.{j}."
            T.norm(out, b + "norm1", d)
            out[b + "attn.relative_position_bias_table"] = (rows, heads)
            T.linear(out, b + "attn.qkv", d, 3 * d, config.qkv_bias)
            T.linear(out, b + "attn.proj", d, d)
            T.norm(out, b + "norm2", d)
            T.linear(out, b + "mlp.fc1", d, hidden)
            T.linear(out, b + "mlp.fc2", hidden, d)
        if i < n - 1:
            s = f"{p}layers.{i}.downsample."
            out[s + "reduction.weight"] = (2 * d, 4 * d)
            if config.merge_norm:
                T.norm(out, s + "norm", 4 * d)
    for name, i in config.output_norms().items():
        T.norm(out, p + name, dims[i])
    if not config.features_only:
        T.linear(out, head, dims[-1], config.num_classes)
    return out


def validate_swin(config: SwinConfig) -> None:
    """What the 2D and 3D models need of a config (``Family.validate``)."""
    from zoo.windows import WINDOW_RULES

    positive(config, "patch_size", "in_chans", "num_classes", "embed_dim", "window_size")
    positive(config, "img_size", "depths", "num_heads")
    if not 1 <= len(config.depths) <= MAX_STAGES:
        raise ConfigError(f"config field depths: {len(config.depths)} stages (1 to {MAX_STAGES})")
    if len(config.num_heads) != len(config.depths):
        raise ConfigError(
            f"config field num_heads: {len(config.num_heads)} entries for "
            f"{len(config.depths)} stages"
        )
    if sum(config.depths) > MAX_BLOCKS:
        raise ConfigError(f"config field depths: {sum(config.depths)} blocks (> {MAX_BLOCKS})")
    for heads, dim in zip(config.num_heads, config.stage_dims(), strict=True):
        divides("num_heads", heads, dim)
    if int(np.prod(config.window_size)) > MAX_WINDOW_TOKENS:
        raise ConfigError(
            f"config field window_size: {config.window_size} holds more than "
            f"{MAX_WINDOW_TOKENS} positions"
        )
    mlp_hidden(config, config.embed_dim)
    for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
        in_range(config, name, 0, 1, open_high=True)
    _validate_out_indices(config)
    if config.window_rule not in WINDOW_RULES:
        raise ConfigError(
            f"config field window_rule: {config.window_rule!r} is none of {sorted(WINDOW_RULES)}"
        )


def _validate_out_indices(config: SwinConfig) -> None:
    out = config.out_indices
    if not out:
        return
    if not config.features_only:
        raise ConfigError(
            f"config field out_indices: {out} needs features_only=True (a classifier's head "
            "reads the final norm)"
        )
    n = len(config.depths)
    if any(not isinstance(i, int) or not 0 <= i < n for i in out) or list(out) != sorted(set(out)):
        raise ConfigError(
            f"config field out_indices: {out} must be distinct stage indices (0 to {n - 1}) "
            "in increasing order"
        )


def _inputs(config: SwinConfig, shape: Sequence[int] | None) -> tuple[Input, ...]:
    return (image_input(config, shape, rank=2),)


#: size: (embed_dim, depths, num_heads, 2D drop_path_rate, 3D drop_path_rate); Video Swin too
SIZES = {
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2, 0.1),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3, 0.2),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5, 0.3),
    "large": (192, (2, 2, 18, 2), (6, 12, 24, 48), 0.5, 0.3),
}

register_family(
    Family(
        name="swin",
        config=SwinConfig,
        model="SwinTransformer",
        shapes=swin_shapes,
        inputs=_inputs,
        validate=validate_swin,
        description="Swin Transformer (2D) with an ImageNet classifier",
        # two stages of two blocks: shifted windows, patch merging, a head
        tiny=SwinConfig(embed_dim=32, depths=(2, 2), num_heads=(1, 2), num_classes=10),
    )
)

for _size, (_dim, _depths, _heads, _dpr2, _) in SIZES.items():
    for _window, _img in ((7, 224), (12, 384)):
        register_variant(
            f"swin_{_size}_patch4_window{_window}_{_img}",
            SwinConfig(
                embed_dim=_dim,
                depths=_depths,
                num_heads=_heads,
                window_size=(_window, _window),
                drop_path_rate=_dpr2,
                img_size=_img,
            ),
            f"Swin-{_size[0].upper()} 2D, window {_window} at {_img}, ImageNet-1k head",
        )
