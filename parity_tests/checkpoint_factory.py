"""Checkpoint files in the layouts real code writes, for the layout and loader tests.

torchvision and timm checkpoints come from those libraries' own models (random weights from
``randomize_``); the official layouts, whose code is not installable, come from the reference
converted with ``weight_convert.layouts.from_reference`` and wrapped as the releases are
(``{'model': sd}`` for microsoft/Swin-Transformer, ``{'meta': ..., 'state_dict': sd}`` for the
mmaction-based Video Swin releases).

Every function returns ``(path, reference)``: the file written and the same weights in the
reference's keys. For the peer libraries ``reference`` is obtained with ``layouts.to_reference``;
the peer parity tests (test_swin_peers.py) are what show that mapping right.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from weight_convert import layouts
from weight_convert.frameworks.reference import randomize_
from zoo.models import create_model

__all__ = [
    "official_swin2d",
    "official_video_swin",
    "save",
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
