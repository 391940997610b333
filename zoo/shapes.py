"""The reference models' state-dict keys and shapes, computed from a config with no framework.

The converter checks checkpoints against these tables (a JAX user converting a ``.safetensors``
file never imports torch) and ``zoo.configs.parameter_count`` sums them. A test pins every table
to the reference model's own ``state_dict()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from zoo.configs import Config, SamConfig, SwinConfig, ViTDetConfig

__all__ = ["reference_shapes"]

Shapes = dict[str, tuple[int, ...]]


def _linear(out: Shapes, key: str, i: int, o: int, bias: bool = True) -> None:
    out[key + ".weight"] = (o, i)
    if bias:
        out[key + ".bias"] = (o,)


def _norm(out: Shapes, key: str, dim: int) -> None:
    out[key + ".weight"] = out[key + ".bias"] = (dim,)


def _conv(out: Shapes, key: str, i: int, o: int, k: int, bias: bool = True) -> None:
    out[key + ".weight"] = (o, i, k, k)
    if bias:
        out[key + ".bias"] = (o,)


def _conv_transpose(out: Shapes, key: str, i: int, o: int, k: int) -> None:
    out[key + ".weight"] = (i, o, k, k)
    out[key + ".bias"] = (o,)


def _swin(config: SwinConfig) -> Shapes:
    p = "backbone." if config.family == "video_swin" else ""
    out: Shapes = {}
    e = config.embed_dim
    out[p + "patch_embed.proj.weight"] = (e, config.in_chans, *config.patch_size)
    out[p + "patch_embed.proj.bias"] = (e,)
    if config.patch_norm:
        _norm(out, p + "patch_embed.norm", e)
    rows = int(np.prod([2 * w - 1 for w in config.window_size]))
    dims, n = config.stage_dims(), len(config.depths)
    for i, (d, depth, heads) in enumerate(zip(dims, config.depths, config.num_heads, strict=True)):
        hidden = int(d * config.mlp_ratio)
        for j in range(depth):
            b = f"{p}layers.{i}.blocks.{j}."
            _norm(out, b + "norm1", d)
            out[b + "attn.relative_position_bias_table"] = (rows, heads)
            _linear(out, b + "attn.qkv", d, 3 * d, config.qkv_bias)
            _linear(out, b + "attn.proj", d, d)
            _norm(out, b + "norm2", d)
            _linear(out, b + "mlp.fc1", d, hidden)
            _linear(out, b + "mlp.fc2", hidden, d)
        if i < n - 1:
            s = f"{p}layers.{i}.downsample."
            out[s + "reduction.weight"] = (2 * d, 4 * d)
            _norm(out, s + "norm", 4 * d)
    _norm(out, p + "norm", dims[-1])
    if not config.features_only:
        head = "cls_head.fc_cls" if config.family == "video_swin" else "head"
        _linear(out, head, dims[-1], config.num_classes)
    return out


def _vit_blocks(
    out: Shapes,
    p: str,
    dim: int,
    depth: int,
    heads: int,
    mlp_ratio: float,
    qkv_bias: bool,
    rel_pos: int | None,
    window: int,
    global_blocks: set[int],
    mlp: tuple[str, str],
) -> None:
    """ViTDet blocks (SAM's image encoder, detectron2's ViT); ``rel_pos`` is the global grid."""
    hidden, head_dim = int(dim * mlp_ratio), dim // heads
    for j in range(depth):
        b = f"{p}blocks.{j}."
        _norm(out, b + "norm1", dim)
        if rel_pos is not None:
            size = rel_pos if j in global_blocks or window == 0 else window
            out[b + "attn.rel_pos_h"] = out[b + "attn.rel_pos_w"] = (2 * size - 1, head_dim)
        _linear(out, b + "attn.qkv", dim, 3 * dim, qkv_bias)
        _linear(out, b + "attn.proj", dim, dim)
        _norm(out, b + "norm2", dim)
        _linear(out, b + f"mlp.{mlp[0]}", dim, hidden)
        _linear(out, b + f"mlp.{mlp[1]}", hidden, dim)


def _sam_image_encoder(config: SamConfig, p: str) -> Shapes:
    out: Shapes = {}
    e, grid = config.encoder_embed_dim, config.image_embedding_size
    if config.use_abs_pos:
        out[p + "pos_embed"] = (1, grid, grid, e)
    _conv(out, p + "patch_embed.proj", config.in_chans, e, config.patch_size)
    _vit_blocks(
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
    _conv(out, p + "neck.0", e, c, 1, bias=False)
    _norm(out, p + "neck.1", c)
    _conv(out, p + "neck.2", c, c, 3, bias=False)
    _norm(out, p + "neck.3", c)
    return out


def _attention(out: Shapes, key: str, dim: int, downsample: int) -> None:
    inner = dim // downsample
    for proj in ("q_proj", "k_proj", "v_proj"):
        _linear(out, f"{key}.{proj}", dim, inner)
    _linear(out, f"{key}.out_proj", inner, dim)


def _mlp(out: Shapes, key: str, i: int, hidden: int, o: int, depth: int) -> None:
    dims = [i] + [hidden] * (depth - 1) + [o]
    for n in range(depth):
        _linear(out, f"{key}.layers.{n}", dims[n], dims[n + 1])


def _sam(config: SamConfig) -> Shapes:
    if config.encoder_only:
        return _sam_image_encoder(config, "")
    out = _sam_image_encoder(config, "image_encoder.")
    c, m = config.prompt_embed_dim, config.mask_in_chans
    p = "prompt_encoder."
    out[p + "pe_layer.positional_encoding_gaussian_matrix"] = (2, c // 2)
    for i in range(4):
        out[f"{p}point_embeddings.{i}.weight"] = (1, c)
    out[p + "not_a_point_embed.weight"] = (1, c)
    _conv(out, p + "mask_downscaling.0", 1, m // 4, 2)
    _norm(out, p + "mask_downscaling.1", m // 4)
    _conv(out, p + "mask_downscaling.3", m // 4, m, 2)
    _norm(out, p + "mask_downscaling.4", m)
    _conv(out, p + "mask_downscaling.6", m, c, 1)
    out[p + "no_mask_embed.weight"] = (1, c)
    d = "mask_decoder."
    t, rate = d + "transformer.", config.attention_downsample_rate
    for i in range(config.transformer_depth):
        layer = f"{t}layers.{i}."
        _attention(out, layer + "self_attn", c, 1)
        _norm(out, layer + "norm1", c)
        _attention(out, layer + "cross_attn_token_to_image", c, rate)
        _norm(out, layer + "norm2", c)
        _linear(out, layer + "mlp.lin1", c, config.transformer_mlp_dim)
        _linear(out, layer + "mlp.lin2", config.transformer_mlp_dim, c)
        _norm(out, layer + "norm3", c)
        _norm(out, layer + "norm4", c)
        _attention(out, layer + "cross_attn_image_to_token", c, rate)
    _attention(out, t + "final_attn_token_to_image", c, rate)
    _norm(out, t + "norm_final_attn", c)
    masks = config.num_multimask_outputs + 1
    out[d + "iou_token.weight"] = (1, c)
    out[d + "mask_tokens.weight"] = (masks, c)
    _conv_transpose(out, d + "output_upscaling.0", c, c // 4, 2)
    _norm(out, d + "output_upscaling.1", c // 4)
    _conv_transpose(out, d + "output_upscaling.3", c // 4, c // 8, 2)
    for i in range(masks):
        _mlp(out, f"{d}output_hypernetworks_mlps.{i}", c, c, c // 8, 3)
    hidden, depth = config.iou_head_hidden_dim, config.iou_head_depth
    _mlp(out, d + "iou_prediction_head", c, hidden, masks, depth)
    return out


def _vitdet(config: ViTDetConfig) -> Shapes:
    net: Shapes = {}
    e, grid = config.embed_dim, config.img_size // config.patch_size
    if config.use_abs_pos:
        tokens = (config.pretrain_img_size // config.patch_size) ** 2
        net["net.pos_embed"] = (1, tokens + int(config.pretrain_use_cls_token), e)
    _conv(net, "net.patch_embed.proj", config.in_chans, e, config.patch_size)
    _vit_blocks(
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
    out: Shapes = {}  # detectron2 registers the pyramid stages before ``net``
    c = config.out_channels
    for name, scale in zip(config.stage_names(), config.scale_factors, strict=True):
        stage = f"{name}."
        if scale == 4.0:
            _conv_transpose(out, stage + "0", e, e // 2, 2)
            _norm(out, stage + "1", e // 2)
            _conv_transpose(out, stage + "3", e // 2, e // 4, 2)
            dim, first = e // 4, 4
        elif scale == 2.0:
            _conv_transpose(out, stage + "0", e, e // 2, 2)
            dim, first = e // 2, 1
        elif scale == 1.0:
            dim, first = e, 0
        elif scale == 0.5:
            dim, first = e, 1  # index 0 is the max pool
        else:
            raise ValueError(f"scale factor {scale} is not supported")
        _conv(out, f"{stage}{first}", dim, c, 1, bias=False)
        _norm(out, f"{stage}{first}.norm", c)
        _conv(out, f"{stage}{first + 1}", c, c, 3, bias=False)
        _norm(out, f"{stage}{first + 1}.norm", c)
    return {**out, **net}


def reference_shapes(config: Config) -> Shapes:
    """Every key of the reference model's state dict for ``config`` with its shape, in the
    model's order (``zoo.models.create_model(...).state_dict()``)."""
    family = config.family
    if family in ("swin", "video_swin"):
        return _swin(config)
    if family in ("sam", "sam_image_encoder"):
        return _sam(config)
    if family == "vitdet":
        return _vitdet(config)
    raise ValueError(f"no shape table for family {family!r}")
