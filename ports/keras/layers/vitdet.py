"""ViTDet attention with decomposed relative positions (segment-anything / detectron2 semantics)."""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops
from keras.backend import standardize_dtype

from ports.keras.layers.drop import DropPath
from ports.keras.layers.mlp import MLPBlock
from ports.keras.layers.norm import LayerNorm
from ports.keras.layers.window import Tensor, window_partition, window_reverse
from ports.keras.layers.window_attention import dot_product_attention
from zoo.windows import pad_amounts, rel_pos_gather_index, rel_pos_resize_matrix

__all__ = [
    "get_rel_pos",
    "add_decomposed_rel_pos",
    "decomposed_rel_pos_bias",
    "window_partition_padded",
    "window_unpartition",
    "Attention",
    "Block",
]


def get_rel_pos(q_size: int, k_size: int, rel_pos: Tensor) -> Tensor:
    """Relative positional embeddings for every (query, key) pair along one axis.

    rel_pos: (L, C). When L != 2 * max(q_size, k_size) - 1 the table is linearly interpolated to
    that length first (a constant resize matrix). Returns (q_size, k_size, C).
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    length = rel_pos.shape[0]
    if length != max_rel_dist:
        dtype = standardize_dtype(rel_pos.dtype)
        resize = ops.convert_to_tensor(rel_pos_resize_matrix(length, max_rel_dist, dtype))
        rel_pos = ops.matmul(ops.cast(resize, rel_pos.dtype), rel_pos)
    index = ops.convert_to_tensor(rel_pos_gather_index(q_size, k_size))
    return ops.take(rel_pos, index, axis=0)


def decomposed_rel_pos_bias(
    q: Tensor,
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> Tensor:
    """Additive attention bias from decomposed relative positions (MViTv2).

    q: (B, q_h * q_w, C), unscaled queries. Returns (B, q_h * q_w, k_h * k_w).
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h)
    rw = get_rel_pos(q_w, k_w, rel_pos_w)
    dim = q.shape[-1]
    r_q = ops.reshape(q, (-1, q_h, q_w, dim))
    rel_h = ops.einsum("bhwc,hkc->bhwk", r_q, ops.cast(rh, q.dtype))
    rel_w = ops.einsum("bhwc,wkc->bhwk", r_q, ops.cast(rw, q.dtype))
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return ops.reshape(bias, (-1, q_h * q_w, k_h * k_w))


def add_decomposed_rel_pos(
    attn: Tensor,
    q: Tensor,
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> Tensor:
    """attn (B, q_h * q_w, k_h * k_w) plus the decomposed relative-position bias of ``q``."""
    return ops.add(attn, decomposed_rel_pos_bias(q, rel_pos_h, rel_pos_w, q_size, k_size))


def window_partition_padded(x: Tensor, window_size: int) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pad (B, H, W, C) to multiples of ``window_size`` and split into windows.

    Returns windows (B * nW, window_size, window_size, C) and the padded size (Hp, Wp).
    """
    h, w = x.shape[1:3]
    pad_h, pad_w = pad_amounts((h, w), (window_size, window_size))
    if pad_h or pad_w:
        x = ops.pad(x, [(0, 0), (0, pad_h), (0, pad_w), (0, 0)])
    return window_partition(x, (window_size, window_size)), (h + pad_h, w + pad_w)


def window_unpartition(
    windows: Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> Tensor:
    """(B * nW, ws, ws, C) -> (B, H, W, C): reverse ``window_partition_padded`` and drop padding."""
    x = window_reverse(windows, (window_size, window_size), pad_hw)
    if tuple(pad_hw) != tuple(hw):
        x = x[:, : hw[0], : hw[1], :]
    return x


class Attention(keras.layers.Layer):
    """Multi-head attention over a (B, H, W, C) map with optional decomposed relative positions.

    ``input_size`` is the (H, W) the relative-position tables are made for; other sizes
    interpolate them (``get_rel_pos``). (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        input_size: tuple[int, int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = keras.layers.Dense(dim * 3, use_bias=qkv_bias, name="qkv")
        self.proj = keras.layers.Dense(dim, name="proj")
        self.use_rel_pos = use_rel_pos
        if use_rel_pos and input_size is None:
            raise ValueError("input_size is required when use_rel_pos is True")
        self.input_size = None if input_size is None else tuple(int(s) for s in input_size)

    def build(self, input_shape: tuple) -> None:
        if self.use_rel_pos:
            self.rel_pos_h = self.add_weight(
                name="rel_pos_h",
                shape=(2 * self.input_size[0] - 1, self.head_dim),
                initializer="zeros",
            )
            self.rel_pos_w = self.add_weight(
                name="rel_pos_w",
                shape=(2 * self.input_size[1] - 1, self.head_dim),
                initializer="zeros",
            )
        self.qkv.build((*input_shape[:-1], self.dim))
        self.proj.build((*input_shape[:-1], self.dim))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        _, h, w, c = x.shape
        heads = self.num_heads
        qkv = ops.reshape(self.qkv(x), (-1, h * w, 3, heads, c // heads))
        q, k, v = ops.unstack(qkv, 3, axis=2)  # each (B, HW, heads, hd)
        bias = None
        if self.use_rel_pos:
            q_heads = ops.reshape(ops.transpose(q, (0, 2, 1, 3)), (-1, h * w, c // heads))
            bias = decomposed_rel_pos_bias(q_heads, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
            bias = ops.reshape(bias, (-1, heads, h * w, h * w))
        out = dot_product_attention(q, k, v, bias, self.scale)
        return self.proj(ops.reshape(out, (-1, h, w, c)))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.dim)


class Block(keras.layers.Layer):
    """ViTDet transformer block: windowed (window_size > 0, with padding) or global attention.

    (B, H, W, C) -> (B, H, W, C). ``mlp_layer(dim, hidden, name="mlp")`` is injected:
    segment-anything uses ``MLPBlock`` (lin1 / lin2); detectron2 uses ``Mlp`` (fc1 / fc2).
    ``drop_path``: detectron2's per-sample stochastic depth on the attention and the MLP branch
    (an ``Identity`` at 0; segment-anything's encoder has none).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_layer: Callable[..., keras.layers.Layer] = LayerNorm,
        use_rel_pos: bool = False,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
        mlp_layer: Callable[..., keras.layers.Layer] = MLPBlock,
        drop_path: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        self.norm1 = norm_layer(dim, name="norm1")
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            input_size=input_size if window_size == 0 else (window_size, window_size),
            name="attn",
        )
        self.drop_path = (
            DropPath(drop_path, name="drop_path")
            if drop_path > 0.0
            else keras.layers.Identity(name="drop_path")
        )
        self.norm2 = norm_layer(dim, name="norm2")
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio), name="mlp")
        self.window_size = window_size

    def build(self, input_shape: tuple) -> None:
        self.norm1.build(input_shape)
        self.attn.build(input_shape)
        self.drop_path.build(input_shape)
        self.norm2.build(input_shape)
        self.mlp.build(input_shape)

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1:3]
            x, pad_hw = window_partition_padded(x, self.window_size)
            x = self.attn(x, training=training)
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        else:
            x = self.attn(x, training=training)
        x = shortcut + self.drop_path(x, training=training)
        return x + self.drop_path(self.mlp(self.norm2(x), training=training), training=training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape
