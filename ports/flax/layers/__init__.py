"""Flax NNX port of ``zoo.layers``: same names, same module trees, channels-last.

``nnx`` state paths equal the reference's state-dict keys split on '.', with the leaf renamed
(``kernel`` / ``scale`` for ``weight``).
"""

from ports.flax.layers.conv import ConvTranspose2d
from ports.flax.layers.drop import DropPath, drop_path
from ports.flax.layers.linear import Linear
from ports.flax.layers.mlp import GELU, Mlp, MLPBlock
from ports.flax.layers.norm import BatchNorm2d, ConditionalBatchNorm2d, LayerNorm, LayerNorm2d
from ports.flax.layers.patch import PatchEmbed, PatchMerging
from ports.flax.layers.pool import MaxPool2d
from ports.flax.layers.swin_block import SwinTransformerBlock
from ports.flax.layers.vitdet import (
    Attention,
    Block,
    add_decomposed_rel_pos,
    decomposed_rel_pos_bias,
    get_rel_pos,
    window_partition_padded,
    window_unpartition,
)
from ports.flax.layers.window import window_partition, window_reverse
from ports.flax.layers.window_attention import WindowAttention

__all__ = [
    "BatchNorm2d",
    "ConditionalBatchNorm2d",
    "ConvTranspose2d",
    "GELU",
    "Attention",
    "Block",
    "DropPath",
    "LayerNorm",
    "LayerNorm2d",
    "Linear",
    "MLPBlock",
    "MaxPool2d",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "SwinTransformerBlock",
    "WindowAttention",
    "add_decomposed_rel_pos",
    "decomposed_rel_pos_bias",
    "drop_path",
    "get_rel_pos",
    "window_partition",
    "window_partition_padded",
    "window_reverse",
    "window_unpartition",
]
