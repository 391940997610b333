"""Video Swin Transformer (3D) with the I3D head, attribute names as in the official checkpoints
(``backbone.layers.0.blocks.1.attn.qkv.weight``, ``cls_head.fc_cls.weight``)."""

from __future__ import annotations

import torch
from torch import nn

from zoo.families.video_swin import VideoSwinConfig
from zoo.models.swin import backbone_features, init_backbone
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["I3DHead", "SwinTransformer3D", "VideoSwin"]


class SwinTransformer3D(nn.Module):
    """The Video Swin backbone: patch_embed -> pos_drop -> stages -> norm.

    Input: (B, in_chans, T, H, W) channels-first, any T, H, W (padded to the 2x4x4 patch, then per
    stage to the window, which shrinks on axes where the map is smaller than it).
    Output: the stage maps, channels-last [(B, T/2, H/4, W/4, C), ...], the last one through
    ``norm`` (what the official backbone returns, there channels-first).
    """

    def __init__(self, config: VideoSwinConfig) -> None:
        super().__init__()
        self.config = config
        init_backbone(self, config)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_inputs(self, "torch", x)
        return backbone_features(self, x)


class I3DHead(nn.Module):
    """Global average pool over (T, H, W) -> dropout -> ``fc_cls``.

    Input: (B, T, H, W, C) channels-last. Output: (B, num_classes).
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc_cls = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1, -2).mean(dim=1)
        return self.fc_cls(self.dropout(x))


@register_model("video_swin", "torch")
class VideoSwin(nn.Module):
    """Video Swin recognizer: ``backbone`` and ``cls_head``, as the official checkpoints nest them.

    Input: (B, in_chans, T, H, W). Output: logits (B, num_classes); with ``config.features_only``
    the backbone's stage maps and no ``cls_head``.
    """

    def __init__(self, config: VideoSwinConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = SwinTransformer3D(config)
        if not config.features_only:
            dim = self.backbone.num_features
            self.cls_head = I3DHead(dim, config.num_classes, config.head_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_inputs(self, "torch", x)
        features = self.backbone(x)
        if self.config.features_only:
            return features
        return self.cls_head(features[-1])
