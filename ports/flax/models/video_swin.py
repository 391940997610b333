"""Video Swin Transformer (3D) with the I3D head, Flax NNX port of ``zoo.models.video_swin``:
same module tree and attribute names (``backbone.layers.0.blocks.1.attn.qkv.kernel``,
``cls_head.fc_cls.kernel``), channels-last."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers.linear import Linear
from ports.flax.models.swin import backbone_features, init_backbone
from zoo.families.video_swin import VideoSwinConfig
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["I3DHead", "SwinTransformer3D", "VideoSwin"]


class SwinTransformer3D(nnx.Module):
    """The Video Swin backbone: patch_embed -> pos_drop -> stages -> norm.

    Input: (B, T, H, W, in_chans) channels-last, any T, H, W (padded to the 2x4x4 patch, then per
    stage to the window, which shrinks on axes where the map is smaller than it).
    Output: the stage maps [(B, T/2, H/4, W/4, C), ...], the last one through ``norm``.
    """

    def __init__(self, config: VideoSwinConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        init_backbone(self, config, rngs=rngs)

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        check_inputs(self, "flax", x)
        return backbone_features(self, x)


class I3DHead(nnx.Module):
    """Global average pool over (T, H, W) -> dropout -> ``fc_cls``.

    Input: (B, T, H, W, C) channels-last. Output: (B, num_classes).
    """

    def __init__(
        self, in_channels: int, num_classes: int, dropout: float = 0.5, *, rngs: nnx.Rngs
    ) -> None:
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.fc_cls = Linear(in_channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.mean(x.reshape(x.shape[0], -1, x.shape[-1]), axis=1)
        return self.fc_cls(self.dropout(x))


@register_model("video_swin", "flax")
class VideoSwin(nnx.Module):
    """Video Swin recognizer: ``backbone`` and ``cls_head``, as the official checkpoints nest them.

    Input: (B, T, H, W, in_chans). Output: logits (B, num_classes); with ``config.features_only``
    the backbone's stage maps and no ``cls_head``.
    """

    def __init__(self, config: VideoSwinConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        self.backbone = SwinTransformer3D(config, rngs=rngs)
        if not config.features_only:
            dim = self.backbone.num_features
            self.cls_head = I3DHead(dim, config.num_classes, config.head_dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array | list[jax.Array]:
        check_inputs(self, "flax", x)
        features = self.backbone(x)
        if self.config.features_only:
            return features
        return self.cls_head(features[-1])
