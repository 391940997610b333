"""CLIP image-encoder checkpoint layouts (``clip_vit``: OpenAI's ``VisionTransformer``;
``clip_resnet``: its ``ModifiedResNet``, layouts ``openai`` and ``visual`` as the ViT's).

``openai``
    OpenAI CLIP's full state dict (``clip.load(..., jit=False)[0].state_dict()``, or the
    TorchScript release's tensors): the image encoder under ``visual.``, the reference's keys.
    open_clip's ``create_model(name).state_dict()`` has exactly these keys (checked by
    parity_tests/families/test_clip_vit.py): it is this layout, and detection names it so. The
    text tower (``transformer.*``, ``token_embedding``, ``positional_embedding``,
    ``ln_final``, ``text_projection``, ``logit_scale``; a scripted open_clip model's
    ``attn_mask``) and the TorchScript release's ``input_resolution`` / ``context_length`` /
    ``vocab_size`` (0-d int64 tensors, which OpenAI's loader deletes) are outside the image
    encoder: dropped by rule and counted in the notes. Written: the ``visual.*`` tensors alone.
    The TorchScript archives themselves (``ViT-B-16.pt``, ``RN50.pt``) are read as their
    ``torch.jit.load(f).state_dict()`` (``weight_convert.torchscript``): this layout.
``visual``
    The image encoder's own state dict, ``model.visual.state_dict()`` of OpenAI's or
    open_clip's CLIP (what ``model.visual.load_state_dict`` takes): the reference's keys.
``huggingface``
    transformers ``CLIPVisionModelWithProjection`` (``vision_model.*``, ``visual_projection``),
    as ``save_pretrained`` writes it (a directory's ``config.json``, model type
    ``clip_vision_model``, read and written), and the image tower of a ``CLIPModel`` file
    (``text_model.*``, ``text_projection``, ``logit_scale`` dropped and counted): q, k, v
    projections stored apart (the rows of ``in_proj_weight`` / ``in_proj_bias``), and
    ``visual_projection.weight``, a Linear's (output_dim, width), is ``proj`` transposed.

The architecture is solved from the shapes (ViT: width and patch from ``conv1``, the grid from
the positional embedding, blocks, MLP width, ``proj``'s columns; ResNet: the blocks per stage,
the width from the stem, the grid from ``attnpool``'s positional embedding); the head count is
in no shape: OpenAI's rule (ViT width // 64, ResNet width * 32 // 64), which every release
follows (a note says so for a custom architecture; a Hugging Face ``config.json`` states it).

OpenAI's releases are float16: tensors keep their dtype through every conversion, and the
models compute in float32 from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from weight_convert.errors import LayoutError
from weight_convert.layouts._huggingface import HFConfig, hf_field, require
from weight_convert.layouts._registry import LayoutSpec, register_layouts
from weight_convert.layouts._transforms import Fuse
from weight_convert.layouts._vit import indices, need
from weight_convert.tensors import LazyTensor
from zoo.configs import match_variant
from zoo.families.clip_resnet import ClipResNetConfig
from zoo.families.clip_vit import ClipViTConfig

__all__ = ["TEXT_TOWER", "Transposed", "heads_by_openai_rule"]

#: the parts of OpenAI's / open_clip's CLIP state dict beside ``visual.``: the text tower (with
#: open_clip's causal ``attn_mask``, a non-persistent buffer that a scripted model, e.g.
#: ``create_model(..., jit=True)`` saved with ``torch.jit.save``, keeps), and the TorchScript
#: release's integer attributes
TEXT_TOWER = (
    "transformer.",
    "token_embedding.",
    "positional_embedding",
    "ln_final.",
    "text_projection",
    "logit_scale",
    "attn_mask",
    "input_resolution",
    "context_length",
    "vocab_size",
)
#: the parts of transformers' ``CLIPModel`` beside the image tower
HF_TEXT_TOWER = ("text_model.", "text_projection.", "logit_scale")


@dataclass(frozen=True)
class Transposed:
    """A tensor rule (``LayoutSpec.tensor_rules``): the 2-D tensor at layout key ``key`` is
    stored transposed (a Linear's (out, in) weight where the reference holds an (in, out)
    matrix applied as ``x @ m``); read and written transposed, lazily, bit-exact."""

    key: str

    def _flip(self, state: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(state)
        if self.key in out:
            value = out[self.key]
            if not isinstance(value, LazyTensor):
                array = np.asarray(value)
                value = LazyTensor(array.shape, array.dtype, lambda: array)
            if value.ndim != 2:
                raise LayoutError(f"{self.key} of shape {value.shape} is not a matrix")
            out[self.key] = value.map(lambda x: np.ascontiguousarray(x.T), value.shape[::-1])
        return out

    read = _flip
    write = _flip


def heads_by_openai_rule(width: int) -> int:
    """OpenAI CLIP's head count of a ViT of ``width``: width // 64 (one head below 64)."""
    return max(1, width // 64)


def _infer_vit(reference: Mapping[str, Any]) -> tuple[ClipViTConfig, list[str]]:
    conv = need(reference, "conv1.weight")
    if conv.ndim != 4 or conv.shape[2] != conv.shape[3]:
        raise LayoutError(f"conv1.weight of shape {tuple(conv.shape)} is no square patch kernel")
    width, in_chans, patch = (int(s) for s in conv.shape[:3])
    tokens = int(need(reference, "positional_embedding").shape[0])
    grid = math.isqrt(max(tokens - 1, 0))
    if grid < 1 or grid * grid + 1 != tokens:
        raise LayoutError(
            f"positional_embedding has {tokens} rows: not a square grid and a class token"
        )
    layers = indices(reference, "transformer.resblocks.")
    if not layers or layers != list(range(len(layers))):
        raise LayoutError("no contiguous transformer.resblocks.N")
    hidden = int(need(reference, "transformer.resblocks.0.mlp.c_fc.weight").shape[0])
    config = ClipViTConfig(
        img_size=grid * patch,
        patch_size=patch,
        in_chans=in_chans,
        width=width,
        layers=len(layers),
        heads=heads_by_openai_rule(width),
        mlp_ratio=hidden / width,
        output_dim=int(need(reference, "proj").shape[1]),
    )
    notes = []
    if match_variant(config) is None:
        notes.append(
            f"the head count is in no tensor's shape: {config.heads} (width // 64, OpenAI's "
            "rule) assumed"
        )
    return config, notes


# --------------------------------------------------------------------------- Hugging Face


def _vit_from_hf(c: Mapping[str, Any], keys) -> dict[str, Any]:
    require(c, "hidden_act", "quick_gelu", "quick_gelu")
    require(c, "layer_norm_eps", 1e-5, 1e-5)
    width = hf_field(c, "hidden_size", 768)
    hidden = hf_field(c, "intermediate_size", 3072)
    return {
        "class": "ClipViTConfig",
        "img_size": hf_field(c, "image_size", 224),
        "patch_size": hf_field(c, "patch_size", 32),
        "in_chans": hf_field(c, "num_channels", 3),
        "width": width,
        "layers": hf_field(c, "num_hidden_layers", 12),
        "heads": hf_field(c, "num_attention_heads", 12),
        "mlp_ratio": hidden / width if isinstance(hidden, int) and isinstance(width, int) else 0,
        "output_dim": hf_field(c, "projection_dim", 512),
    }


def _vit_to_hf(config: ClipViTConfig) -> dict[str, Any]:
    hidden = int(config.width * config.mlp_ratio)
    return {
        "architectures": ["CLIPVisionModelWithProjection"],
        "model_type": "clip_vision_model",
        "hidden_size": config.width,
        "intermediate_size": hidden,
        "projection_dim": config.output_dim,
        "num_hidden_layers": config.layers,
        "num_attention_heads": config.heads,
        "num_channels": config.in_chans,
        "image_size": config.img_size,
        "patch_size": config.patch_size,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
    }


_BLOCK = "transformer.resblocks.{j}."
#: the image encoder's own keys (``visual`` layout), one rule per top-level name
VISUAL_RULES = tuple(
    (name, name)
    for name in (
        "class_embedding",
        "positional_embedding",
        "proj",
        "conv1.",
        "ln_pre.",
        "transformer.resblocks.",
        "ln_post.",
    )
)
_HF_LAYER = "vision_model.encoder.layers.{j}."
#: transformers' q_proj / k_proj / v_proj are the rows of the reference's in_proj
HF_QKV = Fuse("self_attn.", ("q_proj.", "k_proj.", "v_proj."), "in_proj.")

register_layouts(
    "clip_vit",
    _infer_vit,
    [
        LayoutSpec(
            "openai",
            "clip_vit",
            (("", "visual."), *((None, part) for part in TEXT_TOWER)),
            notes=(
                "the zoo runs QuickGELU, as OpenAI's weights and open_clip's `-quickgelu` models "
                "(and pretrained='openai') do; open_clip's plain configs (e.g. ViT-B-16 with "
                "LAION weights) run nn.GELU on the same tensors and would give other numbers",
            ),
        ),
        LayoutSpec("visual", "clip_vit", VISUAL_RULES),
        LayoutSpec(
            "huggingface",
            "clip_vit",
            (
                ("conv1.", "vision_model.embeddings.patch_embedding."),
                ("class_embedding", "vision_model.embeddings.class_embedding"),
                ("positional_embedding", "vision_model.embeddings.position_embedding.weight"),
                ("ln_pre.", "vision_model.pre_layrnorm."),
                (_BLOCK + "attn.in_proj_", _HF_LAYER + "self_attn.in_proj."),
                (_BLOCK + "attn.out_proj.", _HF_LAYER + "self_attn.out_proj."),
                (_BLOCK + "ln_1.", _HF_LAYER + "layer_norm1."),
                (_BLOCK + "mlp.c_fc.", _HF_LAYER + "mlp.fc1."),
                (_BLOCK + "mlp.c_proj.", _HF_LAYER + "mlp.fc2."),
                (_BLOCK + "ln_2.", _HF_LAYER + "layer_norm2."),
                ("ln_post.", "vision_model.post_layernorm."),
                ("proj", "visual_projection.weight"),
                *((None, part) for part in HF_TEXT_TOWER),
            ),
            tensor_rules=(HF_QKV, Transposed("visual_projection.weight")),
            huggingface=HFConfig("clip_vision_model", _vit_from_hf, _vit_to_hf),
        ),
    ],
)


# --------------------------------------------------------------------------- ResNet


def _infer_resnet(reference: Mapping[str, Any]) -> tuple[ClipResNetConfig, list[str]]:
    conv1 = need(reference, "conv1.weight")
    if conv1.ndim != 4 or tuple(conv1.shape[2:]) != (3, 3):
        raise LayoutError(f"conv1.weight of shape {tuple(conv1.shape)} is no 3x3 stem kernel")
    width = int(need(reference, "conv3.weight").shape[0])
    layers = []
    for i in range(1, 5):
        blocks = indices(reference, f"layer{i}.")
        if not blocks or blocks != list(range(len(blocks))):
            raise LayoutError(f"no contiguous layer{i}.N")
        layers.append(len(blocks))
    tokens = int(need(reference, "attnpool.positional_embedding").shape[0])
    grid = math.isqrt(max(tokens - 1, 0))
    if grid < 1 or grid * grid + 1 != tokens:
        raise LayoutError(
            f"attnpool.positional_embedding has {tokens} rows: not a square map and its mean"
        )
    config = ClipResNetConfig(
        img_size=grid * 32,
        in_chans=int(conv1.shape[1]),
        layers=tuple(layers),
        width=width,
        heads=max(1, width * 32 // 64),
        output_dim=int(need(reference, "attnpool.c_proj.weight").shape[0]),
    )
    notes = []
    if match_variant(config) is None:
        notes.append(
            f"the head count is in no tensor's shape: {config.heads} (width * 32 // 64, "
            "OpenAI's rule) assumed"
        )
    return config, notes


register_layouts(
    "clip_resnet",
    _infer_resnet,
    [
        LayoutSpec("openai", "clip_resnet", (("", "visual."), *((None, p) for p in TEXT_TOWER))),
        LayoutSpec(
            "visual",
            "clip_resnet",
            tuple(
                (name, name)
                for name in (
                    *(f"{layer}{i}." for layer in ("conv", "bn") for i in (1, 2, 3)),
                    *(f"layer{i}." for i in (1, 2, 3, 4)),
                    "attnpool.",
                )
            ),
        ),
    ],
)
