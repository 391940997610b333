"""Swin Transformer (2D) checkpoint layouts, and the Swin machinery Video Swin shares.

``official``
    microsoft/Swin-Transformer (``{'model': sd}``): the reference's own keys, plus buffers the
    window defines (``relative_position_index``; ``attn_mask`` of the shifted blocks at the
    training resolution), checked and dropped when read, rebuilt when written.
``torchvision``
    ``torchvision.models.swin_t/s/b`` (a flattened ``relative_position_index``).
``timm``
    timm >= 0.9 ``swin_*``: the patch merging sits at the *start* of stage i >= 1 and the
    classifier is ``head.fc``.
``huggingface``
    transformers ``SwinModel`` / ``SwinForImageClassification`` (``swin.`` prefix with a
    ``classifier``), as ``save_pretrained`` writes them and the Hub serves them
    (``microsoft/swin-tiny-patch4-window7-224``): query / key / value stored apart (the rows of
    the reference's ``qkv``), ``relative_position_index`` where older transformers kept it
    (checked, dropped, not written); a directory's ``config.json`` is read and written.
``mmdetection``
    mmdetection / mmsegmentation ``SwinTransformer`` backbones (one layout: their keys are the
    same): detector / segmentor checkpoints ``{'meta', 'state_dict'[, 'optimizer', ...]}`` with
    ``backbone.patch_embed.projection``, ``backbone.stages.N.blocks.M.attn.w_msa.*``,
    ``ffn.layers.0.0`` / ``ffn.layers.1``, ``stages.N.downsample`` and a LayerNorm ``norm{i}``
    per output (``out_indices``), no final norm; the rest of the detector (neck, heads) is
    outside the model, dropped and counted. Also the files their converters
    (``swin2mmdet.py``, ``swin2mmseg.py``) make of official weights: the same names without
    ``backbone.``, the official final ``norm`` and buffers kept. The patch merging's
    ``reduction`` and ``norm`` channels are stored in ``nn.Unfold`` order, (c, kh, kw) where the
    official concatenation is (kw, kh, c): rearranged to the official order when read and back
    when written. Their blocks shift even where one window covers the map: a checkpoint with
    per-output norms is given ``window_rule="pad_shift"``.

The architecture (depths, dims, heads, window) is solved from the shapes: the window from the
relative-position bias table's rows.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from weight_convert.errors import LayoutError
from weight_convert.layouts._huggingface import HFConfig, hf_field, require
from weight_convert.layouts._registry import DerivedBuffers, LayoutSpec, register_layouts
from weight_convert.layouts._transforms import Fuse, ValueMap
from weight_convert.tensors import load
from zoo.configs import VARIANTS, match_variant
from zoo.families.swin import SwinConfig
from zoo.windows import check_window_buffer, relative_position_index, shifted_window_mask

__all__ = [
    "BLOCK",
    "MMDET_OUTSIDE",
    "derived_buffers",
    "from_unfold_order",
    "index_tokens",
    "infer_swin",
    "to_unfold_order",
]

#: a block's prefix in the reference (and the official layouts)
BLOCK = "layers.{i}.blocks.{j}."

#: (bias-table rows, tokens per window of the checkpoint's relative_position_index or None,
#: where) -> (window, note)
SolveWindow = Callable[[int, int | None, str], tuple[tuple[int, ...], str]]


def index_tokens(shape: Sequence[int]) -> int | None:
    """N, the tokens of a window, of a relative_position_index of ``shape``: (N, N) as official
    and torchvision 3D store it, (N * N,) as torchvision 2D flattens it; None for any other
    shape. Only the shape is looked at (a ``LazyTensor`` has it without reading)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 2 and shape[0] == shape[1]:
        return shape[0]
    if len(shape) == 1:
        n = math.isqrt(shape[0])
        if n * n == shape[0]:
            return n
    return None


# --------------------------------------------------------------------------- derived buffers


def _check(key: str, reference_key: str, value: Any, config: SwinConfig) -> None:
    """The buffer (``reference_key``'s leaf) must be the one ``config``'s window defines
    (``zoo.windows.check_window_buffer``: an index's shape compared before its data is read,
    a mask's shape only)."""
    buffer = reference_key.rsplit(".", 1)[-1]
    try:
        check_window_buffer(buffer, value, config.window_size, where=key, read=load)
    except ValueError as e:
        raise LayoutError(str(e)) from None


def _official_attn_masks(config: SwinConfig) -> dict[str, np.ndarray]:
    """``attn_mask`` buffers of the official 2D model built at ``config.img_size``: shifted blocks
    of stages whose map is larger than the window."""
    out = {}
    size = config.img_size // config.patch_size[0]
    for i, depth in enumerate(config.depths):
        res = size // 2**i
        w = config.window_size[0]
        if res <= w or res % w:
            continue
        mask = shifted_window_mask((res, res), (w, w), (w // 2, w // 2))
        for j in range(1, depth, 2):
            out[f"layers.{i}.blocks.{j}.attn_mask"] = np.array(mask)
    return out


def _make(
    config: SwinConfig, reference_keys: Sequence[str], flat_index: bool, masks: bool
) -> dict[str, list[tuple[str, np.ndarray]]]:
    index = relative_position_index(tuple(config.window_size))
    if flat_index:
        index = index.reshape(-1)
    attn_masks = _official_attn_masks(config) if masks else {}
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for ref in reference_keys:
        if ref.endswith("attn.relative_position_bias_table"):
            key = ref[: -len("relative_position_bias_table")] + "relative_position_index"
            out[ref] = [(key, np.array(index))]
        elif ref.endswith("attn.proj.bias"):
            key = ref[: -len("attn.proj.bias")] + "attn_mask"
            if key in attn_masks:
                out[ref] = [(key, attn_masks[key])]
    return out


def derived_buffers(writes_index: bool, flat_index: bool = False, masks: bool = False):
    """The window's buffers of a Swin layout: read (checked, dropped) always; written after each
    bias table (``relative_position_index``, flattened with ``flat_index``) when
    ``writes_index``, and after each shifted block's ``attn.proj.bias`` (``attn_mask`` at the
    training resolution) with ``masks``."""
    make = partial(_make, flat_index=flat_index, masks=masks) if writes_index else None
    return DerivedBuffers(("relative_position_index", "attn_mask"), _check, make)


# --------------------------------------------------------------------------- config


def _window_2d(rows: int, tokens: int | None, where: str) -> tuple[tuple[int, ...], str]:
    s = int(round(rows**0.5))
    if s * s != rows or s % 2 == 0:
        raise LayoutError(f"{where}: {rows} bias-table rows are not (2w-1)^2 for a square window")
    return ((s + 1) // 2,) * 2, ""


def _depths(reference: Mapping[str, Any], p: str) -> tuple[int, ...]:
    blocks: dict[int, set[int]] = {}
    pattern = re.compile(re.escape(p) + r"layers\.(\d+)\.blocks\.(\d+)\.")
    for key in reference:
        m = pattern.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks:
        raise LayoutError("no transformer blocks")
    depths = tuple(max(blocks.get(i, {-1})) + 1 for i in range(max(blocks) + 1))
    if 0 in depths:
        raise LayoutError(f"stage {depths.index(0)} has no blocks")
    return depths


def infer_swin(
    reference: Mapping[str, Any],
    config_class: type[SwinConfig],
    prefix: str,
    head: str,
    solve_window: SolveWindow,
) -> tuple[SwinConfig, list[str]]:
    """The config of a Swin state dict in the reference's keys: the backbone under ``prefix``,
    the classifier ``head`` (absent: ``features_only``), the window from ``solve_window``."""
    p, notes, base = prefix, [], config_class()
    rank = len(base.patch_size)
    proj = reference.get(p + "patch_embed.proj.weight")
    if proj is None:
        raise LayoutError(f"no {p}patch_embed.proj.weight")
    if proj.ndim != rank + 2:
        raise LayoutError(
            f"patch embedding kernel {tuple(proj.shape)} is not {rank}D as {base.family} needs"
        )
    depths = _depths(reference, p)
    table_keys = [
        f"{p}{BLOCK.format(i=i, j=0)}attn.relative_position_bias_table" for i in range(len(depths))
    ]
    if any(k not in reference for k in table_keys):
        raise LayoutError("a stage's first block has no attn.relative_position_bias_table")
    tables = [reference[k] for k in table_keys]
    index = next((v for k, v in reference.items() if k.endswith(".relative_position_index")), None)
    tokens = None if index is None else index_tokens(np.shape(index))  # shape only: not read
    window, note = solve_window(int(tables[0].shape[0]), tokens, "bias table")
    if note:
        notes.append(note)
    out_indices = tuple(
        sorted(
            int(m.group(1))
            for m in (re.fullmatch(re.escape(p) + r"norm(\d+)\.weight", k) for k in reference)
            if m
        )
    )
    fc1 = reference.get(f"{p}layers.0.blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise LayoutError("no mlp.fc1.weight in the first block")
    embed_dim = int(proj.shape[0])
    head_weight = reference.get(head + "weight")
    fields: dict[str, Any] = dict(
        patch_size=tuple(int(s) for s in proj.shape[2:]),
        in_chans=int(proj.shape[1]),
        embed_dim=embed_dim,
        depths=depths,
        num_heads=tuple(int(t.shape[1]) for t in tables),
        window_size=window,
        mlp_ratio=float(fc1.shape[0]) / embed_dim,
        qkv_bias=f"{p}layers.0.blocks.0.attn.qkv.bias" in reference,
        patch_norm=f"{p}patch_embed.norm.weight" in reference,
        merge_norm=len(depths) == 1 or f"{p}layers.0.downsample.norm.weight" in reference,
        features_only=head_weight is None,
    )
    if out_indices:  # per-output norms: an mmdetection / mmsegmentation backbone
        fields.update(out_indices=out_indices, window_rule="pad_shift")
        notes.append(
            f"a LayerNorm per output of stages {list(out_indices)} (out_indices) and no final "
            "norm: mmdetection's backbone, whose blocks shift even where one window covers the "
            'map (window_rule="pad_shift")'
        )
    if head_weight is not None:
        fields["num_classes"] = int(head_weight.shape[0])
    variant = match_variant(dataclasses.replace(base, **fields))
    if variant is not None:
        base = VARIANTS[variant].config
        if fields.get("num_classes", base.num_classes) != base.num_classes:
            notes.append(f"head has {fields['num_classes']} classes (variant default differs)")
    return dataclasses.replace(base, **fields), notes


# --------------------------------------------------------------------------- Hugging Face


def _square(value: Any, name: str) -> list[int]:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value, value]


def _swin_from_hf(c: Mapping[str, Any], keys) -> dict[str, Any]:
    require(c, "hidden_act", "gelu", "gelu")
    require(c, "layer_norm_eps", 1e-5, 1e-5)
    require(c, "use_absolute_embeddings", False, False)
    head = "classifier.weight" in keys
    labels = hf_field(c, "id2label", None)
    fields = {
        "class": "SwinConfig",
        "patch_size": _square(hf_field(c, "patch_size", 4), "patch_size"),
        "in_chans": hf_field(c, "num_channels", 3),
        "embed_dim": hf_field(c, "embed_dim", 96),
        "depths": list(hf_field(c, "depths", [2, 2, 6, 2])),
        "num_heads": list(hf_field(c, "num_heads", [3, 6, 12, 24])),
        "window_size": _square(hf_field(c, "window_size", 7), "window_size"),
        "mlp_ratio": hf_field(c, "mlp_ratio", 4.0),
        "qkv_bias": hf_field(c, "qkv_bias", True),
        "drop_path_rate": hf_field(c, "drop_path_rate", 0.1),
        "features_only": not head,
    }
    size = hf_field(c, "image_size", 224)
    fields["img_size"] = size[0] if isinstance(size, (list, tuple)) and size else size
    if head:
        fields["num_classes"] = len(labels) if isinstance(labels, dict) and labels else 2
    return fields


def _swin_to_hf(config: SwinConfig) -> dict[str, Any]:
    for name in ("patch_size", "window_size"):
        value = getattr(config, name)
        if len(set(value)) != 1:
            raise LayoutError(f"transformers' Swin takes a square {name}, not {value}")
    if not config.patch_norm:
        raise LayoutError("transformers' Swin always normalizes the patch embedding")
    labels = (
        {} if config.features_only else {str(i): f"LABEL_{i}" for i in range(config.num_classes)}
    )
    return {
        "architectures": ["SwinModel" if config.features_only else "SwinForImageClassification"],
        "model_type": "swin",
        "image_size": config.img_size,
        "patch_size": config.patch_size[0],
        "num_channels": config.in_chans,
        "embed_dim": config.embed_dim,
        "depths": list(config.depths),
        "num_heads": list(config.num_heads),
        "window_size": config.window_size[0],
        "mlp_ratio": config.mlp_ratio,
        "qkv_bias": config.qkv_bias,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "use_absolute_embeddings": False,
        "hidden_dropout_prob": config.drop_rate,
        "attention_probs_dropout_prob": config.attn_drop_rate,
        "drop_path_rate": config.drop_path_rate,
        "encoder_stride": 32,
        "initializer_range": 0.02,
        "id2label": labels,
        "label2id": {v: int(k) for k, v in labels.items()},
    }


def _hf_rules(prefix: str) -> tuple:
    e = prefix + "encoder.layers.{i}."
    b = e + "blocks.{j}."
    return (
        ("patch_embed.proj.", prefix + "embeddings.patch_embeddings.projection."),
        ("patch_embed.norm.", prefix + "embeddings.norm."),
        (BLOCK + "norm1.", b + "layernorm_before."),
        (BLOCK + "attn.qkv.", b + "attention.self.qkv."),
        (BLOCK + "attn.relative_position", b + "attention.self.relative_position"),
        (BLOCK + "attn.proj.", b + "attention.output.dense."),
        (BLOCK + "norm2.", b + "layernorm_after."),
        (BLOCK + "mlp.fc1.", b + "intermediate.dense."),
        (BLOCK + "mlp.fc2.", b + "output.dense."),
        ("layers.{i}.downsample.", e + "downsample."),
        ("norm.", prefix + "layernorm."),
    )


#: transformers' query / key / value linears are the rows of the reference's qkv
HF_QKV = Fuse("attention.self.", ("query.", "key.", "value."), "qkv.")


# --------------------------------------------------------------------------- mmdetection

#: mmdetection / mmsegmentation's ``PatchMerging`` gathers each 2 x 2 neighbourhood with
#: ``nn.Unfold``: channel c * 4 + kh * 2 + kw. The official one concatenates x0..x3 =
#: (kh, kw) = (0,0), (1,0), (0,1), (1,1): channel k * C + c. Their converters
#: (``correct_unfold_reduction_order`` / ``correct_unfold_norm_order``) take the official
#: order to theirs; these functions are that map and its inverse, on the last axis.
_OFFICIAL_TO_UNFOLD = [0, 2, 1, 3]  # its own inverse


def to_unfold_order(x: np.ndarray) -> np.ndarray:
    """Official 4C channel order (last axis) -> ``nn.Unfold``'s, as mmdetection's converter."""
    *lead, n = x.shape
    x = x.reshape(*lead, 4, n // 4)[..., _OFFICIAL_TO_UNFOLD, :]
    return np.ascontiguousarray(np.swapaxes(x, -1, -2).reshape(*lead, n))


def from_unfold_order(x: np.ndarray) -> np.ndarray:
    """``nn.Unfold``'s 4C channel order (last axis) -> the official one: ``to_unfold_order``
    undone."""
    *lead, n = x.shape
    x = np.swapaxes(x.reshape(*lead, n // 4, 4), -1, -2)[..., _OFFICIAL_TO_UNFOLD, :]
    return np.ascontiguousarray(x.reshape(*lead, n))


_UNFOLD_ORDER = (
    ValueMap("layers.*.downsample.reduction.weight", from_unfold_order, to_unfold_order),
    ValueMap("layers.*.downsample.norm.*", from_unfold_order, to_unfold_order),
)

#: the parts of an mmdetection detector / mmsegmentation segmentor beside its backbone
#: (two-stage and one-stage detectors, DETR-style ones, segmentors): dropped and counted
MMDET_OUTSIDE = (
    "neck.",
    "rpn_head.",
    "roi_head.",
    "bbox_head.",
    "mask_head.",
    "semantic_head.",
    "panoptic_head.",
    "panoptic_fusion_head.",
    "encoder.",
    "decoder.",
    "query_embedding.",
    "level_embed",
    "memory_trans_fc.",
    "memory_trans_norm.",
    "dn_query_generator.",
    "decode_head.",
    "auxiliary_head.",
)


def _mmdet_rules(prefix: str) -> tuple:
    s, b = prefix + "stages.{i}.", prefix + "stages.{i}.blocks.{j}."
    return (
        ("patch_embed.proj.", prefix + "patch_embed.projection."),
        ("patch_embed.norm.", prefix + "patch_embed.norm."),
        (BLOCK + "attn.", b + "attn.w_msa."),
        (BLOCK + "mlp.fc1.", b + "ffn.layers.0.0."),
        (BLOCK + "mlp.fc2.", b + "ffn.layers.1."),
        (BLOCK, b),  # norm1, norm2 (and the official attn_mask of a converted file)
        ("layers.{i}.downsample.", s + "downsample."),
        ("norm{i}.", prefix + "norm{i}."),
        ("norm.", prefix + "norm."),
    )


# --------------------------------------------------------------------------- layouts

register_layouts(
    "swin",
    partial(infer_swin, config_class=SwinConfig, prefix="", head="head.", solve_window=_window_2d),
    [
        LayoutSpec(
            "official",
            "swin",
            (
                ("patch_embed.", "patch_embed."),
                (BLOCK, BLOCK),
                ("layers.{i}.downsample.", "layers.{i}.downsample."),
                ("norm.", "norm."),
                ("head.", "head."),
            ),
            derived_buffers(writes_index=True, masks=True),
            wrapper="model",  # microsoft/Swin-Transformer loads checkpoint['model']
        ),
        LayoutSpec(
            "torchvision",
            "swin",
            (
                ("patch_embed.proj.", "features.0.0."),
                ("patch_embed.norm.", "features.0.2."),
                (BLOCK + "mlp.fc1.", "features.{2i+1}.{j}.mlp.0."),
                (BLOCK + "mlp.fc2.", "features.{2i+1}.{j}.mlp.3."),
                (BLOCK, "features.{2i+1}.{j}."),
                ("layers.{i}.downsample.", "features.{2i+2}."),
                ("norm.", "norm."),
                ("head.", "head."),
            ),
            derived_buffers(writes_index=True, flat_index=True),
            notes=(
                "torchvision swin_t/s/b floors its patch conv where H or W is no multiple of the "
                "patch; the reference pads there, as the official code does",
            ),
        ),
        LayoutSpec(
            "timm",
            "swin",
            (
                ("patch_embed.", "patch_embed."),
                (BLOCK, BLOCK),
                ("layers.{i}.downsample.", "layers.{i+1}.downsample."),
                ("norm.", "norm."),
                ("head.", "head.fc."),
            ),
            derived_buffers(writes_index=False),
            notes=("timm shifts before padding on maps not a multiple of the window",),
        ),
        LayoutSpec(
            "huggingface",
            "swin",
            # SwinForImageClassification's keys, then SwinModel's (no prefix): written with
            # the prefix, which SwinModel.from_pretrained strips
            (*_hf_rules("swin."), ("head.", "classifier."), *_hf_rules("")),
            derived_buffers(writes_index=False),
            tensor_rules=(HF_QKV,),
            huggingface=HFConfig("swin", _swin_from_hf, _swin_to_hf),
        ),
        LayoutSpec(
            "mmdetection",
            "swin",
            # the backbone of a detector / segmentor, then what a converter makes (no prefix)
            (
                *_mmdet_rules("backbone."),
                *((None, part) for part in MMDET_OUTSIDE),
                *_mmdet_rules(""),
            ),
            derived_buffers(writes_index=True),
            wrapper="state_dict",  # {'meta': ..., 'state_dict': sd}, as mmengine saves
            value_maps=_UNFOLD_ORDER,
            notes=(
                "mmdetection / mmsegmentation keep the patch-merging reduction and norm "
                "channels in nn.Unfold order: rearranged to the official order",
            ),
        ),
    ],
)
