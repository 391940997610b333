"""ViTDet attention with decomposed relative positions (segment-anything / detectron2 semantics)."""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops
from keras.backend import standardize_dtype

from ports.keras.layers.dense import Dense
from ports.keras.layers.drop import DropPath
from ports.keras.layers.mlp import MLPBlock
from ports.keras.layers.norm import LayerNorm
from ports.keras.layers.window import Tensor, window_partition, window_reverse
from ports.keras.layers.window_attention import dot_product_attention, softmax
from zoo.windows import pad_amounts, rel_pos_gather_index, rel_pos_resize_matrix

__all__ = [
    "get_rel_pos",
    "add_decomposed_rel_pos",
    "decomposed_rel_pos_bias",
    "decomposed_rel_pos",
    "row_chunked_attention",
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
    rel_h, rel_w = decomposed_rel_pos(q, rel_pos_h, rel_pos_w, q_size, k_size)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return ops.reshape(bias, (-1, q_size[0] * q_size[1], k_size[0] * k_size[1]))


def decomposed_rel_pos(
    q: Tensor,
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """The two factors of ``decomposed_rel_pos_bias``: rel_h (B, q_h, q_w, k_h) and rel_w (B,
    q_h, q_w, k_w); the bias of query (i, j) and key (m, n) is rel_h[i, j, m] + rel_w[i, j, n].
    q: (B, q_h * q_w, C), unscaled queries."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h)
    rw = get_rel_pos(q_w, k_w, rel_pos_w)
    dim = q.shape[-1]
    r_q = ops.reshape(q, (-1, q_h, q_w, dim))
    rel_h = ops.einsum("bhwc,hkc->bhwk", r_q, ops.cast(rh, q.dtype))
    rel_w = ops.einsum("bhwc,wkc->bhwk", r_q, ops.cast(rw, q.dtype))
    return rel_h, rel_w


#: token count from which ``Attention`` on the JAX backend's CPU attends one row of query
#: tokens at a time (``row_chunked_attention``)
ROW_CHUNKED_TOKENS = 1024


def _row_chunked(tokens: int) -> bool:
    """Row-by-row global attention: XLA:CPU under JAX, from ``ROW_CHUNKED_TOKENS`` tokens.
    TensorFlow's XLA:CPU is at its matrix-product floor unchunked; PyTorch has a fused kernel;
    accelerators take ``dot_product_attention``'s fused path."""
    if tokens < ROW_CHUNKED_TOKENS or keras.config.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def row_chunked_attention(
    q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, scale: float
) -> Tensor:
    """``dot_product_attention`` with the decomposed bias, one row of the query grid at a time.

    q, k, v: (B, heads, H, W, hd) heads-major; rel_h (B, heads, H, W, k_h), rel_w (B, heads, H,
    W, k_w) from ``decomposed_rel_pos``. Returns (B, H, W, heads, hd). Each row's logits are
    made, biased, normalized and used while in cache (``keras.ops.map`` over rows): the (T, T)
    map of SAM's 64 x 64 global attention (805 MB at ViT-B) never exists, and XLA:CPU's time
    for it drops from 1.19 to 0.76 s on 2 cores, every row computed as unchunked."""
    _, heads, h, w, d = q.shape
    keys = ops.reshape(k, (-1, heads, h * w, d))
    values = ops.reshape(v, (-1, heads, h * w, d))
    k_h, k_w = rel_h.shape[-1], rel_w.shape[-1]

    def row(args):
        q_row, rh_row, rw_row = args  # (B, heads, W, hd), (B, heads, W, k_h), (.., k_w)
        logits = ops.einsum("bnth,bnsh->bnts", q_row * scale, keys)
        logits = ops.reshape(logits, (-1, heads, w, k_h, k_w))
        logits = logits + rh_row[..., :, None] + rw_row[..., None, :]
        probs = softmax(ops.reshape(logits, (-1, heads, w, k_h * k_w)))
        return ops.einsum("bnts,bnsh->bnth", probs, values)

    rows = ops.map(row, tuple(ops.moveaxis(t, 2, 0) for t in (q, rel_h, rel_w)))
    return ops.transpose(rows, (1, 0, 3, 2, 4))  # (H, B, heads, W, hd) -> (B, H, W, heads, hd)


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
        self.qkv = Dense(dim * 3, use_bias=qkv_bias, name="qkv")
        self.proj = Dense(dim, name="proj")
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
        if self.use_rel_pos and _row_chunked(h * w):
            rel_h, rel_w = decomposed_rel_pos(
                q_heads, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w)
            )
            grid = (-1, heads, h, w)
            q, k, v = (
                ops.reshape(ops.transpose(t, (0, 2, 1, 3)), (*grid, c // heads)) for t in (q, k, v)
            )
            rel_h, rel_w = ops.reshape(rel_h, (*grid, h)), ops.reshape(rel_w, (*grid, w))
            out = row_chunked_attention(q, k, v, rel_h, rel_w, self.scale)
            return self.proj(ops.reshape(out, (-1, h, w, c)))
        if self.use_rel_pos:
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
