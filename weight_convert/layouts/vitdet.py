"""ViTDet checkpoint layout.

``detectron2``
    ViTDet Mask R-CNN / Cascade checkpoints (detectron2's model-zoo ``.pkl`` pickles of NumPy
    arrays, or ``.pth``): the backbone under ``backbone.net.*`` and ``backbone.simfp_*``; the
    detector heads (``proposal_generator.*``, ``roi_heads.*``) and the pixel statistics are
    outside the backbone and are dropped, each counted in the notes.

The architecture is solved from the shapes: blocks and global-attention blocks from the
relative-position tables, the pre-training grid from the position embedding, the pyramid from
the ``simfp_N`` stages present.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from weight_convert.errors import LayoutError
from weight_convert.layouts._registry import LayoutSpec, register_layouts
from weight_convert.layouts._vit import indices, need, vit_blocks
from zoo.configs import VARIANTS, match_variant
from zoo.families.vitdet import ViTDetConfig

#: simple feature pyramid stage index (log2 of the stride) -> scale factor
_SIMFP_SCALES = {2: 4.0, 3: 2.0, 4: 1.0, 5: 0.5}


def _pos_embed_fields(reference: Mapping[str, Any], patch: int) -> dict[str, Any]:
    """The pre-training resolution and class token of ``net.pos_embed`` (none: no absolute
    position embedding)."""
    pos = reference.get("net.pos_embed")
    if pos is None:
        return {"use_abs_pos": False}
    tokens = int(pos.shape[1])
    side, cls = int(round(tokens**0.5)), False
    if side * side != tokens:
        side, cls = int(round((tokens - 1) ** 0.5)), True
        if side * side != tokens - 1:
            raise LayoutError(f"net.pos_embed has {tokens} tokens: not a square grid")
    return {"use_abs_pos": True, "pretrain_img_size": side * patch, "pretrain_use_cls_token": cls}


def _pyramid_fields(reference: Mapping[str, Any]) -> dict[str, Any]:
    """The pyramid's stages (scale factors) and channels (from any stage's norms: every stage
    has ``out_channels``)."""
    stages = indices(
        {k[len("simfp_") :]: v for k, v in reference.items() if k.startswith("simfp_")}, ""
    )
    unknown = [i for i in stages if i not in _SIMFP_SCALES]
    if not stages or unknown:
        raise LayoutError(f"feature pyramid stages simfp_{stages} (expected a subset of 2..5)")
    norm = next((k for k in reference if k.startswith("simfp_") and ".norm." in k), None)
    if norm is None:
        raise LayoutError(
            f"no norm tensor in the feature pyramid stages simfp_{stages}: cannot tell its channels"
        )
    return {
        "out_channels": int(reference[norm].shape[0]),
        "scale_factors": tuple(_SIMFP_SCALES[i] for i in stages),
    }


def _infer_vitdet(reference: Mapping[str, Any]) -> tuple[ViTDetConfig, list[str]]:
    proj = need(reference, "net.patch_embed.proj.weight")
    if proj.ndim != 4:
        raise LayoutError(f"patch embedding kernel {tuple(proj.shape)} is not 2D")
    e, patch = int(proj.shape[0]), int(proj.shape[2])
    base = ViTDetConfig()
    depth, heads, window, global_blocks, notes = vit_blocks(
        reference, "net.", e, None, base.window_size
    )
    grid = next(
        (
            (int(reference[f"net.blocks.{j}.attn.rel_pos_h"].shape[0]) + 1) // 2
            for j in global_blocks
        ),
        base.img_size // patch,
    )
    lin1 = need(reference, "net.blocks.0.mlp.fc1.weight")
    fields: dict[str, Any] = dict(
        _pos_embed_fields(reference, patch),
        img_size=grid * patch,
        patch_size=patch,
        in_chans=int(proj.shape[1]),
        embed_dim=e,
        depth=depth,
        num_heads=heads or base.num_heads,
        mlp_ratio=float(lin1.shape[0]) / e,
        qkv_bias="net.blocks.0.attn.qkv.bias" in reference,
        window_size=window,
        window_block_indexes=tuple(j for j in range(depth) if j not in global_blocks),
        use_rel_pos=heads is not None,
        **_pyramid_fields(reference),
    )
    config = dataclasses.replace(base, **fields)
    variant = match_variant(config)
    if variant is not None:
        config = dataclasses.replace(config, drop_path_rate=VARIANTS[variant].config.drop_path_rate)
    return config, notes


register_layouts(
    "vitdet",
    _infer_vitdet,
    [
        LayoutSpec(
            "detectron2",
            "vitdet",
            (
                ("net.", "backbone.net."),
                ("simfp_{i}.", "backbone.simfp_{i}."),
                (None, "proposal_generator."),
                (None, "roi_heads."),
                (None, "pixel_mean"),
                (None, "pixel_std"),
            ),
            model_zoo_pickle=True,
        )
    ],
)
