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
``huggingface`` (sam, and sam_image_encoder)
    transformers ``SamModel`` (``facebook/sam-vit-base``) and ``SamVisionModel``, as
    ``save_pretrained`` writes them: ``vision_encoder.*`` (``layers.N.layer_norm1``,
    ``neck.conv1``, ``patch_embed.projection``), ``prompt_encoder.*`` (``point_embed.N``,
    ``mask_embed.conv1``), ``mask_decoder.*`` (``upscale_conv1``, the MLPs' linears as
    ``proj_in``, ``layers.K``, ``proj_out``), and the prompt encoder's Fourier matrix as
    ``shared_image_embedding.positional_embedding``, tied to
    ``prompt_encoder.shared_embedding.positional_embedding`` (a file holds one or both, equal;
    the first is written). A directory's ``config.json`` is read (the decoder's head count is in
    it, in no shape) and written.

The architecture is solved from the shapes: the encoder's blocks and global-attention blocks from
their relative-position tables; the decoder's head count is not in any shape (a Hugging Face
directory's config.json gives it; a file alone of a custom architecture assumes the default, and
a note says so).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from weight_convert.errors import LayoutError
from weight_convert.layouts._huggingface import HFConfig, hf_field, require
from weight_convert.layouts._registry import LayoutSpec, register_layouts
from weight_convert.layouts._transforms import Tied
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
            f"custom architecture: the decoder's head count is in no tensor shape "
            f"({base.transformer_num_heads} assumed unless a config.json gives it)"
            if not encoder_only
            else "custom architecture"
        )
    return config, notes


# --------------------------------------------------------------------------- Hugging Face


@dataclass(frozen=True)
class FeedForwardLayers:
    """transformers' ``SamFeedForward`` names an MLP's n linears ``proj_in``, ``layers.0`` ..
    ``layers.{n-3}``, ``proj_out``; the reference's ``MLP`` ``layers.0`` .. ``layers.{n-1}``. A
    tensor rule (``LayoutSpec.tensor_rules``) that renumbers them, any depth n >= 2, values
    untouched: the MLPs under ``scopes`` (key fragments ending in the MLP's name)."""

    scopes: tuple[str, ...] = (r"output_hypernetworks_mlps\.\d+", "iou_prediction_head")

    def _pattern(self, leaves: str) -> re.Pattern:
        scopes = "|".join(self.scopes)
        return re.compile(rf"^((?:.*\.)?(?:{scopes})\.)({leaves})\.(.+)$")

    def read(self, state: Mapping[str, Any]) -> dict[str, Any]:
        pattern = self._pattern(r"proj_in|proj_out|layers\.\d+")
        groups: dict[str, set[str]] = {}
        for key in state:
            if m := pattern.match(key):
                groups.setdefault(m.group(1), set()).add(m.group(2))
        renumber: dict[str, dict[str, str]] = {}
        for mlp, names in groups.items():
            ends = {"proj_in", "proj_out"} & names
            if not ends:  # the reference's own numbering (another layout's keys)
                continue
            if len(ends) == 1:
                (there,) = ends
                absent = "proj_out" if there == "proj_in" else "proj_in"
                raise LayoutError(f"{mlp}{there} is there but {mlp}{absent} is not")
            middle = sorted(int(n.split(".")[1]) for n in names - ends)
            if middle != list(range(len(middle))):
                raise LayoutError(f"{mlp}layers holds linears {middle}, not 0 .. {len(middle) - 1}")
            names_ = {"proj_in": "layers.0", "proj_out": f"layers.{len(middle) + 1}"}
            names_.update({f"layers.{k}": f"layers.{k + 1}" for k in middle})
            renumber[mlp] = names_
        out: dict[str, Any] = {}
        for key, value in state.items():
            m = pattern.match(key)
            if m and m.group(1) in renumber:
                key = f"{m.group(1)}{renumber[m.group(1)][m.group(2)]}.{m.group(3)}"
            out[key] = value
        return out

    def write(self, state: Mapping[str, Any]) -> dict[str, Any]:
        pattern = self._pattern(r"layers\.\d+")
        depth: dict[str, int] = {}
        for key in state:
            if m := pattern.match(key):
                n = int(m.group(2).split(".")[1])
                depth[m.group(1)] = max(depth.get(m.group(1), 0), n + 1)
        for mlp, n in depth.items():
            if n < 2:
                raise LayoutError(
                    f"{mlp}: transformers' SamFeedForward has two linears or more (proj_in, "
                    f"proj_out); a {n}-layer MLP has no Hugging Face layout"
                )
        out: dict[str, Any] = {}
        for key, value in state.items():
            m = pattern.match(key)
            if m:
                k, n = int(m.group(2).split(".")[1]), depth[m.group(1)]
                name = "proj_in" if k == 0 else "proj_out" if k == n - 1 else f"layers.{k - 1}"
                key = f"{m.group(1)}{name}.{m.group(3)}"
            out[key] = value
        return out


#: the prompt encoder's Fourier matrix: SamModel holds it twice (tied); save_pretrained keeps
#: the first
HF_POSITIONAL = Tied(
    (
        "shared_image_embedding.positional_embedding",
        "prompt_encoder.shared_embedding.positional_embedding",
    )
)


def _hf_encoder_rules(ours: str, theirs: str) -> tuple:
    """The image encoder under ``ours`` (reference) and ``theirs`` (transformers) prefixes."""
    b, layer = ours + "blocks.{j}.", theirs + "layers.{j}."
    return (
        (ours + "pos_embed", theirs + "pos_embed"),
        (ours + "patch_embed.proj.", theirs + "patch_embed.projection."),
        (b + "norm1.", layer + "layer_norm1."),
        (b + "attn.", layer + "attn."),
        (b + "norm2.", layer + "layer_norm2."),
        (b + "mlp.", layer + "mlp."),
        (ours + "neck.0.", theirs + "neck.conv1."),
        (ours + "neck.1.", theirs + "neck.layer_norm1."),
        (ours + "neck.2.", theirs + "neck.conv2."),
        (ours + "neck.3.", theirs + "neck.layer_norm2."),
    )


def _hf_decoder_rules() -> tuple:
    p, d = "prompt_encoder.", "mask_decoder."
    layer = d + "transformer.layers.{i}."
    norms = tuple((f"{layer}norm{n}.", f"{layer}layer_norm{n}.") for n in (1, 2, 3, 4))
    same = tuple(
        (layer + name, layer + name)
        for name in ("self_attn.", "cross_attn_token_to_image.", "cross_attn_image_to_token.")
    )
    return (
        (p + "pe_layer.positional_encoding_gaussian_matrix", HF_POSITIONAL.keys[0]),
        (p + "point_embeddings.{i}.", p + "point_embed.{i}."),
        (p + "not_a_point_embed.", p + "not_a_point_embed."),
        (p + "mask_downscaling.0.", p + "mask_embed.conv1."),
        (p + "mask_downscaling.1.", p + "mask_embed.layer_norm1."),
        (p + "mask_downscaling.3.", p + "mask_embed.conv2."),
        (p + "mask_downscaling.4.", p + "mask_embed.layer_norm2."),
        (p + "mask_downscaling.6.", p + "mask_embed.conv3."),
        (p + "no_mask_embed.", p + "no_mask_embed."),
        (d + "iou_token.", d + "iou_token."),
        (d + "mask_tokens.", d + "mask_tokens."),
        *norms,
        *same,
        (layer + "mlp.", layer + "mlp."),
        (
            d + "transformer.final_attn_token_to_image.",
            d + "transformer.final_attn_token_to_image.",
        ),
        (d + "transformer.norm_final_attn.", d + "transformer.layer_norm_final_attn."),
        (d + "output_upscaling.0.", d + "upscale_conv1."),
        (d + "output_upscaling.1.", d + "upscale_layer_norm."),
        (d + "output_upscaling.3.", d + "upscale_conv2."),
        # FeedForwardLayers has renumbered proj_in / layers.K / proj_out as the reference's
        (d + "output_hypernetworks_mlps.", d + "output_hypernetworks_mlps."),
        (d + "iou_prediction_head.", d + "iou_prediction_head."),
    )


#: the sub-configs of transformers' SamConfig (a field absent from config.json takes
#: transformers' default, as of transformers 5)
_VISION, _PROMPT, _DECODER = "vision_config", "prompt_encoder_config", "mask_decoder_config"
#: LayerNorm eps of the two-way transformer's blocks: the official SAM's (nn.LayerNorm's 1e-5,
#: the zoo's) and transformers' default, which every SamModel on the Hub states (its
#: conversion kept the default); the zoo runs 1e-5 for both (see the layout's note)
DECODER_EPS = (1e-5, 1e-6)


def _section(c: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = hf_field(c, name, {})
    if not isinstance(value, Mapping):
        raise LayoutError(f"config.json's {name} is a {type(value).__name__}, not an object")
    return value


def _need(section: str, c: Mapping[str, Any], name: str, supported: Any, default: Any) -> None:
    try:
        require(c, name, supported, default)
    except LayoutError as e:
        raise LayoutError(f"{section}: {e}") from None


def _int(section: str, c: Mapping[str, Any], name: str, default: int) -> int:
    """A positive int field (a size, a count); ``LayoutError`` otherwise."""
    value = hf_field(c, name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LayoutError(
            f"config.json's {section}.{name} is {str(value)[:100]}, not a positive int"
        )
    return value


def _size(section: str, c: Mapping[str, Any], name: str, default: int) -> int:
    """An image or patch size: an int, or a square one as transformers also takes it, [s, s]."""
    value = hf_field(c, name, default)
    if isinstance(value, list) and len(value) == 2 and value[0] == value[1]:
        return _int(section, {name: value[0]}, name, default)
    return _int(section, c, name, default)


def _sam_from_hf(c: Mapping[str, Any], keys) -> dict[str, Any]:
    """transformers' ``SamConfig`` (or, ``encoder_only``, ``SamVisionConfig``) as the zoo's."""
    v = _section(c, _VISION)
    out = _vision_fields(v, _VISION)
    p, d = _section(c, _PROMPT), _section(c, _DECODER)
    for section, sub in ((_PROMPT, p), (_DECODER, d)):
        width = _int(section, sub, "hidden_size", 256)
        if width != out["out_chans"]:
            raise LayoutError(
                f"config.json's {section}.hidden_size {width} is not the image embedding's "
                f"width (vision_config.output_channels {out['out_chans']})"
            )
    for name, default in (("image_size", 1024), ("patch_size", 16)):
        if _size(_PROMPT, p, name, default) != out[name.replace("image", "img")]:
            raise LayoutError(
                f"config.json's {_PROMPT}.{name} differs from {_VISION}.{name}: prompts would be "
                "placed on another grid than the image's"
            )
    _need(_PROMPT, p, "num_point_embeddings", 4, 4)
    _need(_PROMPT, p, "hidden_act", "gelu", "gelu")
    _need(_PROMPT, p, "layer_norm_eps", 1e-6, 1e-6)
    _need(_DECODER, d, "hidden_act", "relu", "relu")
    eps = hf_field(d, "layer_norm_eps", 1e-6)
    if eps not in DECODER_EPS:
        raise LayoutError(
            f"{_DECODER}: config.json sets layer_norm_eps={eps!r}; the zoo's model implements "
            f"{DECODER_EPS[0]!r} (the official SAM's; {DECODER_EPS[1]!r}, transformers' default, "
            "is read as it)"
        )
    depth = _int(_DECODER, d, "iou_head_depth", 3)
    if depth < 2:
        raise LayoutError(f"config.json's {_DECODER}.iou_head_depth {depth}: transformers needs 2+")
    out.update(
        encoder_only=False,
        mask_in_chans=_int(_PROMPT, p, "mask_input_channels", 16),
        num_multimask_outputs=_int(_DECODER, d, "num_multimask_outputs", 3),
        iou_head_depth=depth,
        iou_head_hidden_dim=_int(_DECODER, d, "iou_head_hidden_dim", 256),
        transformer_depth=_int(_DECODER, d, "num_hidden_layers", 2),
        transformer_mlp_dim=_int(_DECODER, d, "mlp_dim", 2048),
        transformer_num_heads=_int(_DECODER, d, "num_attention_heads", 8),
        attention_downsample_rate=_int(_DECODER, d, "attention_downsample_rate", 2),
    )
    return out


def _vision_fields(v: Mapping[str, Any], section: str) -> dict[str, Any]:
    """``SamVisionConfig`` as the zoo's ``SamConfig`` fields (the encoder alone)."""
    _need(section, v, "hidden_act", "gelu", "gelu")
    _need(section, v, "layer_norm_eps", 1e-6, 1e-6)
    _need(section, v, "attention_dropout", 0.0, 0.0)
    e = _int(section, v, "hidden_size", 768)
    mlp_dim = hf_field(v, "mlp_dim", None)
    if mlp_dim is None:  # transformers: int(hidden_size * mlp_ratio)
        ratio = hf_field(v, "mlp_ratio", 4.0)
    else:
        mlp_dim = _int(section, v, "mlp_dim", 0)
        ratio = mlp_dim / e
        if int(e * ratio) != mlp_dim:
            raise LayoutError(f"config.json's {section}.mlp_dim {mlp_dim} is no ratio of {e}")
    out = _int(section, v, "output_channels", 256)
    pos = _int(section, v, "num_pos_feats", 128)
    if 2 * pos != out:
        raise LayoutError(
            f"config.json's {section}.num_pos_feats {pos} is not half output_channels {out} (the "
            "prompt encoder's Fourier features)"
        )
    return {
        "class": "SamConfig",
        "img_size": _size(section, v, "image_size", 1024),
        "patch_size": _size(section, v, "patch_size", 16),
        "in_chans": _int(section, v, "num_channels", 3),
        "encoder_embed_dim": e,
        "encoder_depth": _int(section, v, "num_hidden_layers", 12),
        "encoder_num_heads": _int(section, v, "num_attention_heads", 12),
        "encoder_global_attn_indexes": hf_field(v, "global_attn_indexes", [2, 5, 8, 11]),
        "window_size": _int(section, v, "window_size", 14),
        "mlp_ratio": ratio,
        "qkv_bias": hf_field(v, "qkv_bias", True),
        "use_abs_pos": hf_field(v, "use_abs_pos", True),
        "use_rel_pos": hf_field(v, "use_rel_pos", True),
        "out_chans": out,
        "encoder_only": True,
    }


def _vision_to_hf(config: SamConfig) -> dict[str, Any]:
    e = config.encoder_embed_dim
    return {
        "model_type": "sam_vision_model",
        "image_size": config.img_size,
        "patch_size": config.patch_size,
        "num_channels": config.in_chans,
        "hidden_size": e,
        "num_hidden_layers": config.encoder_depth,
        "num_attention_heads": config.encoder_num_heads,
        "global_attn_indexes": list(config.encoder_global_attn_indexes),
        "window_size": config.window_size,
        "mlp_ratio": config.mlp_ratio,
        "mlp_dim": int(e * config.mlp_ratio),
        "qkv_bias": config.qkv_bias,
        "use_abs_pos": config.use_abs_pos,
        "use_rel_pos": config.use_rel_pos,
        "output_channels": config.out_chans,
        "num_pos_feats": config.out_chans // 2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "attention_dropout": 0.0,
        "initializer_range": 1e-10,
    }


def _sam_to_hf(config: SamConfig) -> dict[str, Any]:
    if config.iou_head_depth < 2:
        raise LayoutError(
            f"iou_head_depth {config.iou_head_depth}: transformers' SamFeedForward has 2+ layers"
        )
    c = config.out_chans
    return {
        "architectures": ["SamModel"],
        "model_type": "sam",
        _VISION: _vision_to_hf(config),
        _PROMPT: {
            "model_type": "sam_prompt_encoder",
            "hidden_size": c,
            "image_size": config.img_size,
            "patch_size": config.patch_size,
            "mask_input_channels": config.mask_in_chans,
            "num_point_embeddings": 4,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-6,
        },
        _DECODER: {
            "model_type": "sam_mask_decoder",
            "hidden_size": c,
            "hidden_act": "relu",
            "mlp_dim": config.transformer_mlp_dim,
            "num_hidden_layers": config.transformer_depth,
            "num_attention_heads": config.transformer_num_heads,
            "attention_downsample_rate": config.attention_downsample_rate,
            "num_multimask_outputs": config.num_multimask_outputs,
            "iou_head_depth": config.iou_head_depth,
            "iou_head_hidden_dim": config.iou_head_hidden_dim,
            # the reference's (official SAM's) two-way LayerNorms: transformers then runs them
            # as the zoo does
            "layer_norm_eps": DECODER_EPS[0],
        },
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
    }


def _encoder_from_hf(c: Mapping[str, Any], keys) -> dict[str, Any]:
    return _vision_fields(c, "config")


def _encoder_to_hf(config: SamConfig) -> dict[str, Any]:
    return {"architectures": ["SamVisionModel"], **_vision_to_hf(config)}


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
        ),
        LayoutSpec(
            "huggingface",
            "sam",
            (*_hf_encoder_rules("image_encoder.", "vision_encoder."), *_hf_decoder_rules()),
            tensor_rules=(HF_POSITIONAL, FeedForwardLayers()),
            huggingface=HFConfig("sam", _sam_from_hf, _sam_to_hf),
            notes=(
                "transformers' SamModel runs the two-way transformer's LayerNorms at "
                "mask_decoder_config.layer_norm_eps (1e-6 in the Hub's config.json files); the "
                "reference runs the official SAM's 1e-5 there",
            ),
        ),
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
        ),
        LayoutSpec(
            "huggingface",
            "sam_image_encoder",
            _hf_encoder_rules("", "vision_encoder."),
            huggingface=HFConfig("sam_vision_model", _encoder_from_hf, _encoder_to_hf),
        ),
    ],
)
