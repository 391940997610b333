"""Video Swin Transformer (3D) with the I3D head, Keras 3 port of ``zoo.models.video_swin``: same
module tree and names (``root/backbone/layers-0/blocks-1/attn/qkv/kernel``,
``root/cls_head/fc_cls/kernel``), channels-last, ``keras.ops`` only."""

from __future__ import annotations

import keras

from ports.keras.layers.dense import Dense
from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
from ports.keras.models.swin import (
    backbone_features,
    build_backbone,
    global_pool,
    init_backbone,
)
from zoo.families.video_swin import VideoSwinConfig
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["I3DHead", "SwinTransformer3D", "VideoSwin"]


class SwinTransformer3D(keras.layers.Layer):
    """The Video Swin backbone: patch_embed -> pos_drop -> stages (``layers-i``, held in
    ``stages``) -> norm.

    Input: (B, T, H, W, in_chans) channels-last, any T, H, W (padded to the 2x4x4 patch, then per
    stage to the window, which shrinks on axes where the map is smaller than it).
    Output: the stage maps [(B, T/2, H/4, W/4, C), ...], the last one through ``norm``.
    """

    def __init__(self, config: VideoSwinConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        init_backbone(self, config)

    def build(self, input_shape: tuple) -> None:
        build_backbone(self, self.config, input_shape)

    def call(self, x: Tensor, training: bool | None = None) -> list[Tensor]:
        check_inputs(self, "keras", x)
        return backbone_features(self, x, training)


class I3DHead(keras.layers.Layer):
    """Global average pool over (T, H, W) -> dropout -> ``fc_cls``.

    Input: (B, T, H, W, C) channels-last. Output: (B, num_classes).
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.in_channels = in_channels
        self.dropout = keras.layers.Dropout(dropout, name="dropout")
        self.fc_cls = Dense(num_classes, name="fc_cls")

    def build(self, input_shape: tuple) -> None:
        pooled = (input_shape[0], self.in_channels)
        self.dropout.build(pooled)
        self.fc_cls.build(pooled)

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        return self.fc_cls(self.dropout(global_pool(x), training=training))


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("video_swin", "keras")
class VideoSwin(ZooModel):
    """Video Swin recognizer: ``backbone`` and ``cls_head``, as the official checkpoints nest them.

    Input: (B, T, H, W, in_chans). Output: logits (B, num_classes); with ``config.features_only``
    the backbone's stage maps and no ``cls_head``.
    """

    def __init__(self, config: VideoSwinConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.backbone = SwinTransformer3D(config, name="backbone")
        self.cls_head = (
            None
            if config.features_only
            else I3DHead(
                self.backbone.num_features,
                config.num_classes,
                config.head_dropout,
                name="cls_head",
            )
        )

    def build(self, input_shape: tuple) -> None:
        self.backbone.build(input_shape)
        if self.cls_head is not None:
            nd = len(self.config.patch_size)
            self.cls_head.build((input_shape[0], *(None,) * nd, self.backbone.num_features))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor | list[Tensor]:
        check_inputs(self, "keras", x)
        features = self.backbone(x, training=training)
        if self.cls_head is None:
            return features
        return self.cls_head(features[-1], training=training)
