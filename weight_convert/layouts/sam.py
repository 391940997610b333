"""Segment Anything checkpoint layouts: the whole model, and its image encoder alone.

``official`` (sam)
    The ``segment-anything`` package's ``Sam`` state dict (``image_encoder.*``,
    ``prompt_encoder.*``, ``mask_decoder.*``): the reference's own keys, written flat as the
    releases are.
``timm`` (sam_image_encoder)
    timm ``samvit_*``: SAM's image encoder with ``mlp.fc1`` / ``fc2`` (a classifier ``head.*``,
    where there is one, is dropped). timm builds its blocks with LayerNorm eps 1e-5 and resizes
    ``pos_embed`` (antialiased bicubic) at other grids; the converted model runs as SAM does
    (eps 1e-6, 64 x 64 grid).

The architecture is solved from the shapes: the encoder's blocks and global-attention blocks from
their relative-position tables; the decoder's head count is not in any shape (a custom
architecture assumes the default, and a note says so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from typing import Any

from weight_convert.errors import LayoutError
from weight_convert.layouts._registry import LayoutSpec, register_layouts
from weight_convert.layouts._vit import indices, need, vit_blocks
from zoo.configs import match_variant
from zoo.families.sam import SamConfig


def _decoder_fields(reference: Mapping[str, Any]) -> dict[str, Any]:
    """The prompt encoder's and the mask decoder's sizes."""
    d = "mask_decoder."
    q = need(reference, d + "transformer.layers.0.cross_attn_token_to_image.q_proj.weight")
    return dict(
        mask_in_chans=int(need(reference, "prompt_encoder.mask_downscaling.3.weight").shape[0]),
        num_multimask_outputs=int(need(reference, d + "mask_tokens.weight").shape[0]) - 1,
        iou_head_depth=len(indices(reference, d + "iou_prediction_head.layers.")),
        iou_head_hidden_dim=int(
            need(reference, d + "iou_prediction_head.layers.0.weight").shape[0]
        ),
        transformer_depth=len(indices(reference, d + "transformer.layers.")),
        transformer_mlp_dim=int(
            need(reference, d + "transformer.layers.0.mlp.lin1.weight").shape[0]
        ),
        attention_downsample_rate=int(q.shape[1]) // int(q.shape[0]),
    )


def _infer_sam(reference: Mapping[str, Any], encoder_only: bool) -> tuple[SamConfig, list[str]]:
    p = "" if encoder_only else "image_encoder."
    proj = need(reference, p + "patch_embed.proj.weight")
    if proj.ndim != 4:
        raise LayoutError(f"patch embedding kernel {tuple(proj.shape)} is not 2D")
    e, patch = int(proj.shape[0]), int(proj.shape[2])
    pos = reference.get(p + "pos_embed")
    grid = None if pos is None else int(pos.shape[1])
    base = SamConfig()
    depth, heads, window, global_blocks, notes = vit_blocks(reference, p, e, grid, base.window_size)
    if grid is None:
        grid = base.image_embedding_size
    lin1 = need(reference, p + "blocks.0.mlp.lin1.weight")
    neck = need(reference, p + "neck.0.weight")
    fields: dict[str, Any] = dict(
        img_size=grid * patch,
        patch_size=patch,
        in_chans=int(proj.shape[1]),
        encoder_embed_dim=e,
        encoder_depth=depth,
        encoder_num_heads=heads or base.encoder_num_heads,
        encoder_global_attn_indexes=tuple(global_blocks),
        window_size=window,
        mlp_ratio=float(lin1.shape[0]) / e,
        qkv_bias=p + "blocks.0.attn.qkv.bias" in reference,
        use_abs_pos=pos is not None,
        use_rel_pos=heads is not None,
        out_chans=int(neck.shape[0]),
        encoder_only=encoder_only,
    )
    if not encoder_only:
        fields.update(_decoder_fields(reference))
    config = dataclasses.replace(base, **fields)
    if match_variant(config) is None:
        notes.append(
            f"custom architecture: {base.transformer_num_heads} decoder heads assumed "
            "(head counts are not in the tensor shapes)"
            if not encoder_only
            else "custom architecture"
        )
    return config, notes


register_layouts(
    "sam",
    partial(_infer_sam, encoder_only=False),
    [
        LayoutSpec(
            "official",
            "sam",
            (
                ("image_encoder.", "image_encoder."),
                ("prompt_encoder.", "prompt_encoder."),
                ("mask_decoder.", "mask_decoder."),
            ),
        )
    ],
)

register_layouts(
    "sam_image_encoder",
    partial(_infer_sam, encoder_only=True),
    [
        LayoutSpec(
            "timm",
            "sam_image_encoder",
            (
                ("pos_embed", "pos_embed"),
                ("patch_embed.", "patch_embed."),
                ("blocks.{j}.mlp.lin1.", "blocks.{j}.mlp.fc1."),
                ("blocks.{j}.mlp.lin2.", "blocks.{j}.mlp.fc2."),
                ("blocks.{j}.", "blocks.{j}."),
                ("neck.", "neck."),
                (None, "head."),  # a classifier (samvit_*_224): not part of SAM's encoder
            ),
        )
    ],
)
