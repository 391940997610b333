"""Checkpoint files in the layouts real code writes, for the layout and loader tests.

torchvision, timm and segment-anything checkpoints come from those libraries' own models (random
weights from ``randomize_``); the official Swin layouts, whose code is not installable, and
detectron2's ViTDet layout come from the reference
converted with ``weight_convert.layouts.from_reference`` and wrapped as the releases are
(``{'model': sd}`` for microsoft/Swin-Transformer, ``{'meta': ..., 'state_dict': sd}`` for the
mmaction-based Video Swin releases).

Every function returns ``(path, reference)``: the file written and the same weights in the
reference's keys. For the peer libraries ``reference`` is obtained with ``layouts.to_reference``;
the peer parity tests (test_swin_peers.py) are what show that mapping right.
"""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import torch

from weight_convert import layouts
from weight_convert.frameworks.reference import randomize_
from zoo.models import build_model, create_model

__all__ = [
    "huggingface_sam",
    "huggingface_sam_module",
    "official_sam",
    "official_sam_module",
    "official_swin2d",
    "official_video_swin",
    "save",
    "timm_samvit",
    "timm_swin2d",
    "torchvision_swin2d",
    "torchvision_swin3d",
]

Made = tuple[str, dict[str, np.ndarray]]


def _numpy(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def _tensors(sd: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}


def save(path: str | os.PathLike, obj) -> str:
    """``torch.save`` to ``path`` (parent folders made); numpy arrays in dicts become tensors."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(obj, path)
    return path


def _from_peer(path, module: torch.nn.Module, seed: int) -> Made:
    randomize_(module, seed).eval()
    sd = _numpy(module)
    save(path, module.state_dict())
    return os.fspath(path), layouts.to_reference(sd, layouts.detect(sd))


def torchvision_swin3d(path, seed: int = 0) -> Made:
    """``torchvision.models.video.swin3d_t()`` state dict (torchvision layout, Video Swin-T)."""
    from torchvision.models.video import swin3d_t

    return _from_peer(path, swin3d_t(), seed)


def torchvision_swin2d(path, seed: int = 0) -> Made:
    """``torchvision.models.swin_t()`` state dict (torchvision layout, Swin-T)."""
    from torchvision.models import swin_t

    return _from_peer(path, swin_t(), seed)


def timm_swin2d(path, seed: int = 0) -> Made:
    """timm ``swin_tiny_patch4_window7_224`` state dict (timm layout)."""
    import timm

    return _from_peer(path, timm.create_model("swin_tiny_patch4_window7_224"), seed)


def _reference(variant: str, seed: int, overrides) -> tuple[dict[str, np.ndarray], object]:
    model = randomize_(create_model(variant, **overrides), seed).eval()
    return _numpy(model), model.config


def official_video_swin(path, seed: int = 0, variant: str = "video_swin_tiny", **overrides) -> Made:
    """An mmaction-style Video Swin checkpoint: ``{'meta': {...}, 'state_dict': sd}`` with
    ``backbone.*`` / ``cls_head.*`` keys and ``relative_position_index`` buffers. ``overrides``
    change the config (e.g. ``depths=(2, 2, 2, 2)`` for speed)."""
    ref, config = _reference(variant, seed, overrides)
    sd = layouts.from_reference(ref, "official", "video_swin", config)
    meta = {"mmaction2_version": "0.x", "config": f"{variant} (random weights, seed {seed})"}
    return save(path, {"meta": meta, "state_dict": _tensors(sd)}), ref


def official_swin2d(
    path, seed: int = 0, variant: str = "swin_tiny_patch4_window7_224", **overrides
) -> Made:
    """A microsoft/Swin-Transformer release: ``{'model': sd}`` with ``relative_position_index``
    and ``attn_mask`` buffers."""
    ref, config = _reference(variant, seed, overrides)
    sd = layouts.from_reference(ref, "official", "swin", config)
    return save(path, {"model": _tensors(sd)}), ref


def official_sam_module(config) -> torch.nn.Module:
    """``segment_anything.modeling.Sam`` built as ``build_sam`` does, with ``config``'s sizes
    (a ``zoo.configs.SamConfig``), in eval mode, default init."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    grid, c = config.image_embedding_size, config.prompt_embed_dim
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=config.img_size,
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=config.mlp_ratio,
            out_chans=c,
            qkv_bias=config.qkv_bias,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_abs_pos=config.use_abs_pos,
            use_rel_pos=config.use_rel_pos,
            window_size=config.window_size,
            global_attn_indexes=config.encoder_global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=c,
            image_embedding_size=(grid, grid),
            input_image_size=(config.img_size, config.img_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=c,
            transformer=TwoWayTransformer(
                depth=config.transformer_depth,
                embedding_dim=c,
                num_heads=config.transformer_num_heads,
                mlp_dim=config.transformer_mlp_dim,
                attention_downsample_rate=config.attention_downsample_rate,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=list(config.pixel_mean),
        pixel_std=list(config.pixel_std),
    ).eval()


def official_sam(path, config, seed: int = 0) -> Made:
    """A SAM release as ``segment-anything`` writes it (``sam_vit_b_01ec64.pth`` is the bare
    ``Sam.state_dict()``), from the package's own model with random weights."""
    return _from_peer(path, official_sam_module(config), seed)


def timm_samvit_module(config) -> torch.nn.Module:
    """timm's ``samvit_base_patch16`` entry point (``VisionTransformerSAM``, the encoder alone)
    with ``config``'s sizes, in eval mode. timm's blocks default to LayerNorm eps 1e-5; SAM's
    1e-6 is passed so the two compute the same."""
    import timm

    return timm.create_model(
        "samvit_base_patch16",
        img_size=config.img_size,
        embed_dim=config.encoder_embed_dim,
        depth=config.encoder_depth,
        num_heads=config.encoder_num_heads,
        global_attn_indexes=config.encoder_global_attn_indexes,
        window_size=config.window_size,
        neck_chans=config.out_chans,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    ).eval()


def timm_samvit(path, config, seed: int = 0) -> Made:
    """A timm ``samvit_*`` state dict (timm layout) with ``config``'s sizes."""
    return _from_peer(path, timm_samvit_module(config), seed)


def huggingface_sam_module(config) -> torch.nn.Module:
    """transformers' ``SamModel`` (``SamVisionModel`` for ``encoder_only``) with ``config``'s
    sizes (a ``zoo.configs.SamConfig``), in eval mode, default init; transformers' own defaults
    elsewhere (the two-way transformer's LayerNorm eps 1e-6, as on the Hub)."""
    from transformers import SamConfig as HFSamConfig
    from transformers import (
        SamMaskDecoderConfig,
        SamModel,
        SamPromptEncoderConfig,
        SamVisionConfig,
        SamVisionModel,
    )

    c = config.out_chans
    vision = SamVisionConfig(
        image_size=config.img_size,
        patch_size=config.patch_size,
        num_channels=config.in_chans,
        hidden_size=config.encoder_embed_dim,
        num_hidden_layers=config.encoder_depth,
        num_attention_heads=config.encoder_num_heads,
        global_attn_indexes=list(config.encoder_global_attn_indexes),
        window_size=config.window_size,
        mlp_dim=int(config.encoder_embed_dim * config.mlp_ratio),
        qkv_bias=config.qkv_bias,
        use_abs_pos=config.use_abs_pos,
        use_rel_pos=config.use_rel_pos,
        output_channels=c,
        num_pos_feats=c // 2,
    )
    if config.encoder_only:
        return SamVisionModel(vision).eval()
    prompt = SamPromptEncoderConfig(
        hidden_size=c,
        image_size=config.img_size,
        patch_size=config.patch_size,
        mask_input_channels=config.mask_in_chans,
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=c,
        mlp_dim=config.transformer_mlp_dim,
        num_hidden_layers=config.transformer_depth,
        num_attention_heads=config.transformer_num_heads,
        attention_downsample_rate=config.attention_downsample_rate,
        num_multimask_outputs=config.num_multimask_outputs,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    hf = HFSamConfig(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
    )
    return SamModel(hf).eval()


def huggingface_sam(path, config, seed: int = 0) -> Made:
    """A ``save_pretrained`` directory (config.json, model.safetensors) of transformers'
    ``SamModel`` / ``SamVisionModel`` with ``config``'s sizes and random weights; ``path`` is
    the directory."""
    module = randomize_(huggingface_sam_module(config), seed).eval()
    module.save_pretrained(path)
    sd = _numpy(module)
    return os.fspath(path), layouts.to_reference(sd, layouts.detect(sd))


def torchvision_swin(path, config, seed: int = 0) -> Made:
    """torchvision ``SwinTransformer`` (2D, as ``swin_t``) or ``SwinTransformer3d`` (as
    ``swin3d_t``) with ``config``'s sizes (a ``SwinConfig`` / ``VideoSwinConfig``), for small
    checkpoints in the torchvision layout."""
    sizes = dict(
        patch_size=list(config.patch_size),
        embed_dim=config.embed_dim,
        depths=list(config.depths),
        num_heads=list(config.num_heads),
        window_size=list(config.window_size),
        mlp_ratio=config.mlp_ratio,
        num_classes=config.num_classes,
    )
    if config.family == "video_swin":
        from torchvision.models.video.swin_transformer import SwinTransformer3d

        return _from_peer(path, SwinTransformer3d(**sizes), seed)
    from torchvision.models.swin_transformer import SwinTransformer

    return _from_peer(path, SwinTransformer(**sizes), seed)


def timm_swin(path, config, seed: int = 0) -> Made:
    """timm ``SwinTransformer`` with ``config``'s sizes (a 2D ``SwinConfig``; square patch and
    window), for small checkpoints in the timm layout."""
    from timm.models.swin_transformer import SwinTransformer

    model = SwinTransformer(
        img_size=config.img_size,
        patch_size=config.patch_size[0],
        in_chans=config.in_chans,
        num_classes=config.num_classes,
        embed_dim=config.embed_dim,
        depths=config.depths,
        num_heads=config.num_heads,
        window_size=config.window_size[0],
        mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias,
    )
    return _from_peer(path, model, seed)


#: detector tensors a detectron2 ViTDet checkpoint holds besides the backbone (dropped on reading)
DETECTRON2_HEADS = {
    "proposal_generator.rpn_head.conv.weight": (32, 32, 3, 3),
    "proposal_generator.rpn_head.objectness_logits.weight": (3, 32, 1, 1),
    "roi_heads.box_head.fc1.weight": (64, 32 * 7 * 7),
    "roi_heads.box_predictor.cls_score.weight": (81, 64),
    "roi_heads.box_predictor.cls_score.bias": (81,),
}


def detectron2_vitdet(path, config, seed: int = 0) -> Made:
    """A detectron2 model-zoo ViTDet checkpoint: a pickle of ``{"model": {key: ndarray},
    "__author__": ..., "matching_heuristics": True}`` with the backbone (the reference with random
    weights, in the detectron2 keys) and the detector-head tensors of ``DETECTRON2_HEADS``."""
    import pickle

    from zoo.models import SimpleFeaturePyramid

    ref = _numpy(randomize_(SimpleFeaturePyramid(config), seed).eval())
    sd = layouts.from_reference(ref, "detectron2", "vitdet", config)
    rng = np.random.default_rng(seed)
    for key, shape in DETECTRON2_HEADS.items():
        sd[key] = rng.standard_normal(shape, dtype=np.float32)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        data = {"model": sd, "__author__": "checkpoint_factory", "matching_heuristics": True}
        pickle.dump(data, f)
    return path, ref


#: what an mmdetection Mask R-CNN checkpoint holds besides its backbone (dropped on reading)
MMDET_HEADS = {
    "neck.lateral_convs.0.conv.weight": (16, 32, 1, 1),
    "neck.fpn_convs.0.conv.weight": (16, 16, 3, 3),
    "rpn_head.rpn_conv.weight": (16, 16, 3, 3),
    "rpn_head.rpn_cls.bias": (3,),
    "roi_head.bbox_head.fc_cls.weight": (81, 64),
    "roi_head.mask_head.conv_logits.weight": (80, 16, 1, 1),
}


def mmdet_backbone(config, out_indices: tuple[int, ...] | None = None):
    """``config`` (a ``SwinConfig``) as mmdetection builds its backbone: ``features_only``, a
    norm per output of ``out_indices`` (default: every stage), blocks that always shift."""
    import dataclasses

    out = tuple(range(len(config.depths))) if out_indices is None else tuple(out_indices)
    return dataclasses.replace(config, features_only=True, out_indices=out, window_rule="pad_shift")


def mmdetection_swin(path, config, seed: int = 0) -> Made:
    """An mmdetection (mmengine) detector checkpoint: ``{'meta': ..., 'state_dict': sd,
    'optimizer': ...}`` with the backbone of ``config`` (see ``mmdet_backbone``; random weights
    from the reference, in the mmdetection layout: ``nn.Unfold`` channel order in the patch
    merging) and the ``MMDET_HEADS`` tensors."""
    ref = _numpy(randomize_(build_model(config), seed).eval())
    sd = layouts.from_reference(ref, "mmdetection", "swin", config)
    rng = np.random.default_rng(seed)
    for key, shape in MMDET_HEADS.items():
        sd[key] = rng.standard_normal(shape, dtype=np.float32)
    meta = {"mmdet_version": "3.3.0", "dataset_meta": {"classes": ("person",)}, "epoch": 12}
    optimizer = {"state": {}, "param_groups": [{"lr": 0.0001}]}
    return save(path, {"meta": meta, "state_dict": _tensors(sd), "optimizer": optimizer}), ref


__all__ += [
    "DETECTRON2_HEADS",
    "MMDET_HEADS",
    "detectron2_vitdet",
    "mmdet_backbone",
    "mmdetection_swin",
    "timm_swin",
    "torchvision_swin",
]
