"""Keras 3 building blocks mirroring ``zoo.layers``: same names, same module trees, channels-last.

Every sublayer is named after its reference attribute, so Keras variable paths
(``root/attn/qkv/kernel``) map one to one onto PyTorch state-dict keys (``attn.qkv.weight``).
Only ``keras.ops`` is used: the layers run on the TensorFlow, JAX and torch backends.
"""

from ports.keras.layers.conv import ConvTranspose2d
from ports.keras.layers.dense import Dense
from ports.keras.layers.drop import DropPath, drop_path
from ports.keras.layers.mlp import GELU, Mlp, MLPBlock
from ports.keras.layers.norm import BatchNorm2d, ConditionalBatchNorm2d, LayerNorm, LayerNorm2d
from ports.keras.layers.patch import PatchEmbed, PatchMerging
from ports.keras.layers.pool import MaxPool2d
from ports.keras.layers.swin_block import SwinTransformerBlock
from ports.keras.layers.vitdet import (
    Attention,
    Block,
    add_decomposed_rel_pos,
    decomposed_rel_pos_bias,
    get_rel_pos,
    window_partition_padded,
    window_unpartition,
)
from ports.keras.layers.window import window_partition, window_reverse
from ports.keras.layers.window_attention import WindowAttention

__all__ = [
    "BatchNorm2d",
    "ConditionalBatchNorm2d",
    "ConvTranspose2d",
    "GELU",
    "Attention",
    "Block",
    "DropPath",
    "Dense",
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
