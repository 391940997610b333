"""Reference PyTorch building blocks. Attribute names follow the official checkpoints.

``ports.keras.layers`` and ``ports.flax.layers`` export the same names with the same trees.
"""

from zoo.layers.conv import ConvTranspose2d
from zoo.layers.drop import DropPath, drop_path
from zoo.layers.mlp import Mlp, MLPBlock
from zoo.layers.norm import BatchNorm2d, ConditionalBatchNorm2d, LayerNorm, LayerNorm2d
from zoo.layers.patch import PatchEmbed, PatchMerging
from zoo.layers.pool import MaxPool2d
from zoo.layers.swin_block import SwinTransformerBlock
from zoo.layers.vitdet import (
    Attention,
    Block,
    add_decomposed_rel_pos,
    decomposed_rel_pos_bias,
    get_rel_pos,
    window_partition_padded,
    window_unpartition,
)
from zoo.layers.window import window_partition, window_reverse
from zoo.layers.window_attention import WindowAttention

__all__ = [
    "BatchNorm2d",
    "ConditionalBatchNorm2d",
    "ConvTranspose2d",
    "Attention",
    "Block",
    "DropPath",
    "LayerNorm",
    "LayerNorm2d",
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
