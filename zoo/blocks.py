"""The parity cases of every building block. Framework-free.

A ``BlockCase`` names a class that exists under the same name in ``zoo.layers`` (reference),
``ports.keras.layers`` and ``ports.flax.layers``; ``Ref("LayerNorm")`` arguments are resolved in
each framework's namespace. Shapes include sizes that are not multiples of the window or patch,
windows larger than the input, batch > 1, non-square maps and odd temporal lengths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo.family import Input
from zoo.registry import Registry
from zoo.tensor_format import Format
from zoo.windows import shifted_window_mask

__all__ = ["BLOCKS", "BlockCase", "Input", "Ref"]


@dataclass(frozen=True)
class Ref:
    """A constructor argument naming a layer factory (``"LayerNorm"``) in each framework."""

    name: str


@dataclass(frozen=True)
class BlockCase:
    """A block built with ``kwargs`` and run on ``inputs``; ``id`` says what the case covers."""

    block: str
    id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[Input, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.block}[{self.id}]"


#: Block name -> its parity cases. Shapes include sizes that are not multiples of the window or
#: patch, windows larger than the input, batch > 1, non-square maps and odd temporal lengths.
BLOCKS: Registry[tuple[BlockCase, ...]] = Registry("block")

_LN = Ref("LayerNorm")
CF = Format.CHANNELS_FIRST


def _cases(block: str, *cases: tuple[str, dict, tuple[Input, ...]]) -> None:
    BLOCKS.register(block, tuple(BlockCase(block, id_, kw, inputs) for id_, kw, inputs in cases))


def _tokens(*shape: int) -> tuple[Input, ...]:
    return (Input(shape),)


_cases(
    "Mlp",
    ("tokens", dict(in_features=32, hidden_features=64), _tokens(2, 10, 32)),
    ("map-b3", dict(in_features=32, hidden_features=48, out_features=16), _tokens(3, 5, 7, 32)),
    ("single", dict(in_features=24), _tokens(1, 1, 24)),
)
_cases(
    "MLPBlock",
    ("tokens", dict(embedding_dim=32, mlp_dim=64), _tokens(2, 10, 32)),
    ("map", dict(embedding_dim=16, mlp_dim=40), _tokens(1, 3, 5, 16)),
    ("single", dict(embedding_dim=8, mlp_dim=8), _tokens(1, 1, 8)),
)
_cases(
    "DropPath",
    ("tokens", dict(drop_prob=0.3), _tokens(4, 10, 8)),
    ("map", dict(drop_prob=0.5), _tokens(2, 3, 5, 8)),
    ("zero", dict(drop_prob=0.0), _tokens(1, 2, 8)),
)
_cases(
    "ConvTranspose2d",
    (
        "k2-odd-map-b2",
        dict(in_channels=8, out_channels=6, kernel_size=2, stride=2),
        (Input((2, 8, 5, 7), Format.CHANNELS_FIRST),),
    ),
    (
        "k4-no-bias",
        dict(in_channels=4, out_channels=3, kernel_size=4, stride=4, bias=False),
        (Input((1, 4, 3, 2), Format.CHANNELS_FIRST),),
    ),
    (
        "k2-1x1-map",
        dict(in_channels=16, out_channels=8, kernel_size=2, stride=2),
        (Input((3, 16, 1, 1), Format.CHANNELS_FIRST),),
    ),
)
_cases(
    "LayerNorm2d",
    ("square-b2", dict(num_channels=32), (Input((2, 32, 8, 8), CF),)),
    ("odd", dict(num_channels=16), (Input((1, 16, 7, 9), CF),)),
    ("eps", dict(num_channels=8, eps=1e-5), (Input((3, 8, 1, 5), CF),)),
)
# random running statistics and affine parameters (``randomize_``); eval mode here, training
# mode and the running-statistic updates in test_batchnorm.py
_cases(
    "BatchNorm2d",
    ("b2-8x8", dict(num_features=16), (Input((2, 16, 8, 8), CF),)),
    ("odd-b3-7x5-cumulative", dict(num_features=8, momentum=None), (Input((3, 8, 7, 5), CF),)),
    ("no-affine-1x9", dict(num_features=4, affine=False), (Input((1, 4, 1, 9), CF),)),
    (
        "batch-stats-only",
        dict(num_features=6, track_running_stats=False),
        (Input((2, 6, 3, 4), CF),),
    ),
)


# N(0, 1) inputs: a padded border of negative values is where -inf and zero padding differ
_cases(
    "MaxPool2d",
    ("k3-s2-p1-225x191", dict(kernel_size=3, stride=2, padding=1), (Input((1, 3, 225, 191), CF),)),
    ("k3-s2-p1-b2-8x10", dict(kernel_size=3, stride=2, padding=1), (Input((2, 4, 8, 10), CF),)),
    ("k2-odd-7x9", dict(kernel_size=2, stride=2), (Input((1, 4, 7, 9), CF),)),
)


def _shift_mask(padded, window, shift, batch):
    def make() -> np.ndarray:
        return shifted_window_mask(padded, window, shift)

    n_windows = int(np.prod([p // w for p, w in zip(padded, window, strict=False)]))
    return n_windows * batch, make


def _masked_attention_case(id_, dim, heads, padded, window, shift, batch):
    b_, make = _shift_mask(padded, window, shift, batch)
    n = int(np.prod(window))
    kwargs = dict(dim=dim, window_size=window, num_heads=heads)
    return (id_, kwargs, (Input((b_, n, dim)), Input((b_ // batch, n, n), fixed=make)))


_cases(
    "WindowAttention",
    ("2d", dict(dim=32, window_size=(7, 7), num_heads=4), _tokens(3, 49, 32)),
    _masked_attention_case("2d-shift-mask", 32, 4, (14, 21), (7, 7), (3, 3), 2),
    ("2d-shrunk-window", dict(dim=32, window_size=(7, 7), num_heads=2), _tokens(2, 20, 32)),
    (
        "2d-no-qkv-bias-scale",
        dict(dim=24, window_size=(4, 6), num_heads=3, qkv_bias=False, qk_scale=0.3),
        _tokens(2, 24, 24),
    ),
    ("3d", dict(dim=24, window_size=(2, 4, 4), num_heads=3), _tokens(2, 32, 24)),
    _masked_attention_case("3d-shift-mask", 24, 3, (4, 8, 8), (2, 4, 4), (1, 2, 2), 1),
)

_swin2d = dict(dim=32, num_heads=4, window_size=(7, 7), norm_layer=_LN)
_swin3d = dict(dim=24, num_heads=3, window_size=(4, 4, 4), norm_layer=_LN)
_cases(
    "SwinTransformerBlock",
    ("2d-14x14-b2", dict(_swin2d, shift_size=(0, 0)), _tokens(2, 14, 14, 32)),
    ("2d-shift-14x21", dict(_swin2d, shift_size=(3, 3)), _tokens(1, 14, 21, 32)),
    ("2d-shift-pad-10x13", dict(_swin2d, shift_size=(3, 3)), _tokens(2, 10, 13, 32)),
    ("2d-shift-smaller-5x6", dict(_swin2d, shift_size=(3, 3)), _tokens(1, 5, 6, 32)),
    ("2d-shift-one-axis-5x16", dict(_swin2d, shift_size=(3, 3)), _tokens(1, 5, 16, 32)),
    (
        "2d-pad-rule-5x9",
        dict(_swin2d, shift_size=(3, 3), window_rule="pad"),
        _tokens(2, 5, 9, 32),
    ),
    ("3d-8x8x8", dict(_swin3d, shift_size=(0, 0, 0)), _tokens(1, 8, 8, 8, 24)),
    ("3d-shift-b2-5x9x7", dict(_swin3d, shift_size=(2, 2, 2)), _tokens(2, 5, 9, 7, 24)),
    ("3d-shift-short-3x10x6", dict(_swin3d, shift_size=(2, 2, 2)), _tokens(1, 3, 10, 6, 24)),
    (
        "3d-video-window-4x14x14",
        dict(_swin3d, window_size=(8, 7, 7), shift_size=(4, 3, 3)),
        _tokens(1, 4, 14, 14, 24),
    ),
)

_cases(
    "PatchEmbed",
    (
        "2d-norm-b2",
        dict(patch_size=(4, 4), in_chans=3, embed_dim=32, norm_layer=_LN),
        (Input((2, 3, 32, 32), CF),),
    ),
    (
        "2d-pad-30x45",
        dict(patch_size=(4, 4), in_chans=3, embed_dim=32),
        (Input((1, 3, 30, 45), CF),),
    ),
    (
        "2d-smaller-3x5",
        dict(patch_size=(4, 4), in_chans=3, embed_dim=16, norm_layer=_LN),
        (Input((1, 3, 3, 5), CF),),
    ),
    (
        "3d-norm",
        dict(patch_size=(2, 4, 4), in_chans=3, embed_dim=24, norm_layer=_LN),
        (Input((1, 3, 8, 32, 32), CF),),
    ),
    (
        "3d-pad-odd-t-b2",
        dict(patch_size=(2, 4, 4), in_chans=3, embed_dim=24),
        (Input((2, 3, 5, 30, 18), CF),),
    ),
)
_cases(
    "PatchMerging",
    ("2d-b2", dict(dim=32, norm_layer=_LN), _tokens(2, 8, 8, 32)),
    ("2d-odd-7x9", dict(dim=16, norm_layer=_LN), _tokens(1, 7, 9, 16)),
    ("2d-1x1", dict(dim=8, norm_layer=_LN), _tokens(1, 1, 1, 8)),
    ("3d-odd-3x7x9", dict(dim=24, norm_layer=_LN), _tokens(2, 3, 7, 9, 24)),
)

_cases(
    "Attention",
    (
        "global-relpos-b2",
        dict(dim=32, num_heads=4, use_rel_pos=True, input_size=(8, 8)),
        _tokens(2, 8, 8, 32),
    ),
    (
        "relpos-interp-9x7",
        dict(dim=32, num_heads=4, use_rel_pos=True, input_size=(6, 6)),
        _tokens(1, 9, 7, 32),
    ),
    (
        "relpos-shrink-4x5",
        dict(dim=16, num_heads=2, use_rel_pos=True, input_size=(7, 8)),
        _tokens(1, 4, 5, 16),
    ),
    ("no-relpos", dict(dim=32, num_heads=4), _tokens(2, 5, 6, 32)),
    # >= 1024 tokens: the ports' row-by-row global attention on CPU (ROW_CHUNKED_TOKENS)
    (
        "relpos-rows-b2-33x32",
        dict(dim=16, num_heads=2, use_rel_pos=True, input_size=(33, 32)),
        _tokens(2, 33, 32, 16),
    ),
    (
        "relpos-rows-interp-32x35",
        dict(dim=16, num_heads=2, use_rel_pos=True, input_size=(16, 16)),
        _tokens(1, 32, 35, 16),
    ),
)
_cases(
    "Block",
    (
        "window-pad-b2",
        dict(dim=32, num_heads=4, use_rel_pos=True, window_size=5),
        _tokens(2, 12, 9, 32),
    ),
    (
        "window-larger-than-input",
        dict(dim=32, num_heads=4, use_rel_pos=True, window_size=14),
        _tokens(1, 6, 10, 32),
    ),
    (
        "global",
        dict(dim=32, num_heads=4, use_rel_pos=True, input_size=(8, 10)),
        _tokens(1, 8, 10, 32),
    ),
    ("global-no-relpos", dict(dim=16, num_heads=2, input_size=(5, 7)), _tokens(2, 5, 7, 16)),
)

# conditional batch normalization: eval mode here (random running statistics); training mode,
# the running statistics and the planted bugs in test_conditional_batchnorm.py
_cases(
    "ConditionalBatchNorm2d",
    ("b2-8x8", dict(num_features=8, cond_dim=6), (Input((2, 8, 8, 8), CF), Input((2, 6)))),
    (
        "odd-b3-7x5-cumulative",
        dict(num_features=4, cond_dim=10, momentum=None),
        (Input((3, 4, 7, 5), CF), Input((3, 10))),
    ),
    ("b4-1x9", dict(num_features=6, cond_dim=3), (Input((4, 6, 1, 9), CF), Input((4, 3)))),
)
