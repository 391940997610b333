"""Swin Transformer (2D), Flax NNX port of ``zoo.models.swin``: same module tree and attribute
names (``layers.0.blocks.1.attn.relative_position_bias_table``, ``layers.0.downsample.reduction``),
channels-last.

``BasicLayer`` (a stage) serves the 2D and the 3D model alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers.linear import Linear
from ports.flax.layers.norm import LayerNorm
from ports.flax.layers.patch import PatchEmbed, PatchMerging
from ports.flax.layers.swin_block import SwinTransformerBlock
from zoo.families.swin import SwinConfig
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = [
    "BasicLayer",
    "SwinTransformer",
    "backbone_features",
    "build_stages",
    "init_backbone",
    "run_stages",
]


class BasicLayer(nnx.Module):
    """One stage: ``blocks`` (even ones unshifted, odd ones shifted by half a window) and the
    ``downsample`` (``PatchMerging`` or None) that the official checkpoints file under the stage it
    follows.

    ``__call__`` runs the blocks only and returns the stage's output map (B, *S, C); the model
    applies ``downsample`` after taking that map, so features and logits come from one pass.
    """

    def __init__(
        self,
        config: SwinConfig,
        dim: int,
        depth: int,
        num_heads: int,
        drop_path: Sequence[float],
        downsample: bool,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        unshifted = (0,) * len(config.window_size)
        self.blocks = nnx.List(
            [
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
                    rngs=rngs,
                )
                for i in range(depth)
            ]
        )
        self.downsample = (
            PatchMerging(dim, norm_layer=LayerNorm if config.merge_norm else None, rngs=rngs)
            if downsample
            else nnx.data(None)
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x


def build_stages(config: SwinConfig, *, rngs: nnx.Rngs) -> nnx.List:
    dims, rates = config.stage_dims(), config.drop_path_rates()
    n = len(config.depths)
    return nnx.List(
        [
            BasicLayer(
                config,
                dims[i],
                config.depths[i],
                config.num_heads[i],
                rates[i],
                i < n - 1,
                rngs=rngs,
            )
            for i in range(n)
        ]
    )


def run_stages(layers: Sequence[BasicLayer], x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """Run the stages; return the last map and every stage's map (taken before downsampling)."""
    features = []
    for layer in layers:
        x = layer(x)
        features.append(x)
        if layer.downsample is not None:
            x = layer.downsample(x)
    return x, features


def init_backbone(module: nnx.Module, config: SwinConfig, *, rngs: nnx.Rngs) -> None:
    """Give ``module`` the backbone attributes shared by the 2D model and the Video Swin
    backbone: patch_embed, pos_drop, layers (the stages), and the output norms: ``norm``, or
    ``norm{i}`` for each of ``config.out_indices``."""
    module.patch_embed = PatchEmbed(
        config.patch_size,
        config.in_chans,
        config.embed_dim,
        norm_layer=LayerNorm if config.patch_norm else None,
        rngs=rngs,
    )
    module.pos_drop = nnx.Dropout(config.drop_rate, rngs=rngs)
    module.layers = build_stages(config, rngs=rngs)
    dims = config.stage_dims()
    module.num_features = dims[-1]
    for name, i in config.output_norms().items():
        setattr(module, name, LayerNorm(dims[i], rngs=rngs))


def backbone_features(module: nnx.Module, x: jax.Array) -> list[jax.Array]:
    """The stage maps of a module set up by ``init_backbone``: every stage's, the last one
    through ``norm``; with ``config.out_indices``, those stages' only, each through its
    ``norm{i}``."""
    features = run_stages(module.layers, module.pos_drop(module.patch_embed(x)))[1]
    out_indices = module.config.out_indices
    if out_indices:
        return [getattr(module, f"norm{i}")(features[i]) for i in out_indices]
    return [*features[:-1], module.norm(features[-1])]


@register_model("swin", "flax")
class SwinTransformer(nnx.Module):
    """Swin Transformer (2D) with the classification head.

    Input: (B, H, W, in_chans) channels-last, any H, W.
    Output: logits (B, num_classes); with ``config.features_only`` the list of stage maps
    [(B, H/4, W/4, C), (B, H/8, W/8, 2C), ...] (sizes rounded up), the last one through ``norm``,
    and no ``head``; with ``config.out_indices`` too, the maps of those stages only, each
    through its own ``norm{i}`` (mmdetection's backbone).
    """

    def __init__(self, config: SwinConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        init_backbone(self, config, rngs=rngs)
        if not config.features_only:
            self.head = Linear(self.num_features, config.num_classes, rngs=rngs)

    def forward_features(self, x: jax.Array) -> list[jax.Array]:
        return backbone_features(self, x)

    def __call__(self, x: jax.Array) -> jax.Array | list[jax.Array]:
        check_inputs(self, "flax", x)
        features = self.forward_features(x)
        if self.config.features_only:
            return features
        last = features[-1]
        pooled = jnp.mean(last.reshape(last.shape[0], -1, last.shape[-1]), axis=1)
        return self.head(pooled)  # global average pool
