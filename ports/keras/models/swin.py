"""Swin Transformer (2D), Keras 3 port of ``zoo.models.swin``: same module tree and names
(``root/layers-0/blocks-1/attn/relative_position_bias_table``,
``root/layers-0/downsample/reduction/kernel``), channels-last, ``keras.ops`` only.

``BasicLayer`` (a stage) serves the 2D and the 3D model alike. ``keras.Model`` reserves the
attribute ``layers``, so the stages live in the attribute ``stages``; their Keras names (and so
the variable paths) are the reference's ``layers-i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from ports.keras.layers.dense import Dense
from ports.keras.layers.norm import LayerNorm
from ports.keras.layers.patch import PatchEmbed, PatchMerging
from ports.keras.layers.swin_block import SwinTransformerBlock
from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
from zoo.families.swin import SwinConfig
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = [
    "BasicLayer",
    "SwinTransformer",
    "backbone_features",
    "build_backbone",
    "build_stages",
    "init_backbone",
    "global_pool",
    "run_stages",
]


class BasicLayer(keras.layers.Layer):
    """One stage: ``blocks-j`` (even ones unshifted, odd ones shifted by half a window) and the
    ``downsample`` (``PatchMerging`` or None) that the official checkpoints file under the stage it
    follows.

    ``call`` runs the blocks only and returns the stage's output map (B, *S, C); the model applies
    ``downsample`` after taking that map, so features and logits come from one pass.
    """

    def __init__(
        self,
        config: SwinConfig,
        dim: int,
        depth: int,
        num_heads: int,
        drop_path: Sequence[float],
        downsample: bool,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        unshifted = (0,) * len(config.window_size)
        self.blocks = [
            SwinTransformerBlock(
                dim,
                num_heads,
                window_size=config.window_size,
                shift_size=unshifted if i % 2 == 0 else config.shift_size(),
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                drop=config.drop_rate,
                attn_drop=config.attn_drop_rate,
                drop_path=drop_path[i],
                norm_layer=LayerNorm,
                window_rule=config.window_rule,
                name=f"blocks-{i}",
            )
            for i in range(depth)
        ]
        norm = LayerNorm if config.merge_norm else None
        self.downsample = (
            PatchMerging(dim, norm_layer=norm, name="downsample") if downsample else None
        )

    def build(self, input_shape: tuple) -> None:
        shape = (*input_shape[:-1], self.dim)
        for block in self.blocks:
            block.build(shape)
        if self.downsample is not None:
            self.downsample.build(shape)

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


def build_stages(config: SwinConfig) -> list[BasicLayer]:
    """The stages ``layers-0`` ... of a config; every stage but the last downsamples."""
    dims, rates = config.stage_dims(), config.drop_path_rates()
    n = len(config.depths)
    return [
        BasicLayer(
            config,
            dims[i],
            config.depths[i],
            config.num_heads[i],
            rates[i],
            i < n - 1,
            name=f"layers-{i}",
        )
        for i in range(n)
    ]


def init_backbone(owner: keras.layers.Layer, config: SwinConfig) -> None:
    """Give ``owner`` the backbone sublayers shared by the 2D model and the Video Swin backbone:
    patch_embed, pos_drop, the stages (attribute ``stages``: ``Model.layers`` is Keras's own;
    the stage layers are named ``layers-i``, so paths match the reference) and the output
    norms: ``norm``, or ``norm{i}`` for each of ``config.out_indices``."""
    owner.patch_embed = PatchEmbed(
        config.patch_size,
        config.in_chans,
        config.embed_dim,
        norm_layer=LayerNorm if config.patch_norm else None,
        name="patch_embed",
    )
    owner.pos_drop = keras.layers.Dropout(config.drop_rate, name="pos_drop")
    owner.stages = build_stages(config)
    dims = config.stage_dims()
    owner.num_features = dims[-1]
    for name, i in config.output_norms().items():
        setattr(owner, name, LayerNorm(dims[i], name=name))


def backbone_features(
    owner: keras.layers.Layer, x: Tensor, training: bool | None = None
) -> list[Tensor]:
    """The stage maps of a layer set up by ``init_backbone``: every stage's, the last one
    through ``norm``; with ``config.out_indices``, those stages' only, each through its
    ``norm{i}``."""
    x = owner.pos_drop(owner.patch_embed(x, training=training), training=training)
    features = run_stages(owner.stages, x, training)[1]
    out_indices = owner.config.out_indices
    if out_indices:
        return [getattr(owner, f"norm{i}")(features[i]) for i in out_indices]
    return [*features[:-1], owner.norm(features[-1])]


def build_backbone(
    owner: keras.layers.Layer, config: SwinConfig, input_shape: Sequence[int | None]
) -> None:
    """Create the variables of ``owner.patch_embed``, ``owner.stages`` and the output norms for
    channels-last input of rank ``len(input_shape)``; spatial sizes are left open."""
    batch, nd = input_shape[0], len(config.patch_size)
    open_map = (batch, *(None,) * nd)
    owner.patch_embed.build((*open_map, config.in_chans))
    owner.pos_drop.build((*open_map, config.embed_dim))
    for stage, dim in zip(owner.stages, config.stage_dims(), strict=True):
        stage.build((*open_map, dim))
    dims = config.stage_dims()
    for name, i in config.output_norms().items():
        getattr(owner, name).build((*open_map, dims[i]))


def run_stages(
    stages: Sequence[BasicLayer], x: Tensor, training: bool | None = None
) -> tuple[Tensor, list[Tensor]]:
    """Run the stages; return the last map and every stage's map (taken before downsampling)."""
    features = []
    for stage in stages:
        x = stage(x, training=training)
        features.append(x)
        if stage.downsample is not None:
            x = stage.downsample(x, training=training)
    return x, features


def global_pool(x: Tensor) -> Tensor:
    """Mean over every position of a channels-last map: (B, *S, C) -> (B, C)."""
    return ops.mean(x, axis=tuple(range(1, len(x.shape) - 1)))


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("swin", "keras")
class SwinTransformer(ZooModel):
    """Swin Transformer (2D) with the classification head.

    Input: (B, H, W, in_chans) channels-last, any H, W.
    Output: logits (B, num_classes); with ``config.features_only`` the list of stage maps
    [(B, H/4, W/4, C), (B, H/8, W/8, 2C), ...] (sizes rounded up), the last one through ``norm``,
    and no ``head``; with ``config.out_indices`` too, the maps of those stages only, each
    through its own ``norm{i}`` (mmdetection's backbone).
    """

    def __init__(self, config: SwinConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        init_backbone(self, config)
        self.head = None if config.features_only else Dense(config.num_classes, name="head")

    def build(self, input_shape: tuple) -> None:
        build_backbone(self, self.config, input_shape)
        if self.head is not None:
            self.head.build((input_shape[0], self.num_features))

    def forward_features(self, x: Tensor, training: bool | None = None) -> list[Tensor]:
        return backbone_features(self, x, training)

    def call(self, x: Tensor, training: bool | None = None) -> Tensor | list[Tensor]:
        check_inputs(self, "keras", x)
        features = self.forward_features(x, training)
        if self.head is None:
            return features
        return self.head(global_pool(features[-1]))
