"""ViTDet attention with decomposed relative positions (segment-anything / detectron2 semantics)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ports.flax.layers.drop import DropPath
from ports.flax.layers.linear import Linear
from ports.flax.layers.mlp import MLPBlock
from ports.flax.layers.norm import LayerNorm
from ports.flax.layers.window import window_partition, window_reverse
from ports.flax.layers.window_attention import dot_product_attention, softmax
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


def get_rel_pos(q_size: int, k_size: int, rel_pos: jax.Array) -> jax.Array:
    """Relative positional embeddings for every (query, key) pair along one axis.

    rel_pos: (L, C). When L != 2 * max(q_size, k_size) - 1 the table is linearly interpolated to
    that length first (``F.interpolate(mode="linear")`` as a constant matrix). Returns
    (q_size, k_size, C).
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    length = rel_pos.shape[0]
    if length != max_rel_dist:
        resize = jnp.asarray(rel_pos_resize_matrix(length, max_rel_dist, rel_pos.dtype))
        rel_pos = jnp.matmul(resize, rel_pos, precision=jax.lax.Precision.HIGHEST)
    # int32 indices: an int64 numpy index under jax.enable_x64, in a process that also runs
    # without it, meets an int32 constant in JAX's index normalization (JAX 0.10)
    return rel_pos[rel_pos_gather_index(q_size, k_size).astype(np.int32)]


def decomposed_rel_pos_bias(
    q: jax.Array,
    rel_pos_h: jax.Array,
    rel_pos_w: jax.Array,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> jax.Array:
    """Additive attention bias from decomposed relative positions (MViTv2).

    q: (B, q_h * q_w, C), unscaled queries. Returns (B, q_h * q_w, k_h * k_w).
    """
    rel_h, rel_w = decomposed_rel_pos(q, rel_pos_h, rel_pos_w, q_size, k_size)
    b, q_h, q_w, k_h = rel_h.shape
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return bias.reshape(b, q_h * q_w, k_h * rel_w.shape[-1])


def decomposed_rel_pos(
    q: jax.Array,
    rel_pos_h: jax.Array,
    rel_pos_w: jax.Array,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> tuple[jax.Array, jax.Array]:
    """The two factors of ``decomposed_rel_pos_bias``: rel_h (B, q_h, q_w, k_h) and rel_w (B,
    q_h, q_w, k_w); the bias of query (i, j) and key (m, n) is rel_h[i, j, m] + rel_w[i, j, n].
    q: (B, q_h * q_w, C), unscaled queries."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h)
    rw = get_rel_pos(q_w, k_w, rel_pos_w)
    b, _, dim = q.shape
    r_q = q.reshape(b, q_h, q_w, dim)
    rel_h = jnp.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = jnp.einsum("bhwc,wkc->bhwk", r_q, rw)
    return rel_h, rel_w


#: token count from which ``Attention`` on CPU attends one row of query tokens at a time
ROW_CHUNKED_TOKENS = 1024


def row_chunked_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, rel_h: jax.Array, rel_w: jax.Array, scale: float
) -> jax.Array:
    """``dot_product_attention`` with the decomposed bias, one row of the query grid at a time.

    q, k, v: (B, heads, H, W, hd) heads-major; rel_h (B, heads, H, W, k_h), rel_w (B, heads, H,
    W, k_w) from ``decomposed_rel_pos``. Returns (B, H, W, heads, hd). Each row's logits (B,
    heads, W, k_h * k_w) are made, biased, normalized and used while they are in cache
    (``jax.lax.map`` over rows); the whole (T, T) map of SAM's 64 x 64 global attention (805 MB
    at ViT-B) never exists, and XLA:CPU's time for it drops from 1.19 to 0.76 s on 2 cores.
    Every row is computed as in the unchunked form (bit-identical on XLA:CPU)."""
    b, n, h, w, d = q.shape
    keys = k.reshape(b, n, -1, d)  # (B, heads, S, hd)
    values = v.reshape(b, n, -1, d)

    def row(args):
        q_row, rh_row, rw_row = args  # (B, heads, W, hd), (B, heads, W, k_h), (.., k_w)
        logits = jnp.einsum("bnth,bnsh->bnts", q_row * jnp.asarray(scale, q.dtype), keys)
        logits = logits.reshape(*rh_row.shape, rw_row.shape[-1])
        logits = logits + rh_row[..., :, None] + rw_row[..., None, :]
        probs = softmax(logits.reshape(b, n, w, -1), -1)
        return jnp.einsum("bnts,bnsh->bnth", probs, values)

    rows = jax.lax.map(row, tuple(jnp.moveaxis(t, 2, 0) for t in (q, rel_h, rel_w)))
    return rows.transpose(1, 0, 3, 2, 4)  # (H, B, heads, W, hd) -> (B, H, W, heads, hd)


def add_decomposed_rel_pos(
    attn: jax.Array,
    q: jax.Array,
    rel_pos_h: jax.Array,
    rel_pos_w: jax.Array,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> jax.Array:
    """attn (B, q_h * q_w, k_h * k_w) plus the decomposed relative-position bias of ``q``."""
    return attn + decomposed_rel_pos_bias(q, rel_pos_h, rel_pos_w, q_size, k_size)


def window_partition_padded(x: jax.Array, window_size: int) -> tuple[jax.Array, tuple[int, int]]:
    """Zero-pad (B, H, W, C) to multiples of ``window_size`` and split into windows.

    Returns windows (B * nW, window_size, window_size, C) and the padded size (Hp, Wp).
    """
    h, w = x.shape[1:3]
    pad_h, pad_w = pad_amounts((h, w), (window_size, window_size))
    if pad_h or pad_w:
        x = jnp.pad(x, [(0, 0), (0, pad_h), (0, pad_w), (0, 0)])
    return window_partition(x, (window_size, window_size)), (h + pad_h, w + pad_w)


def window_unpartition(
    windows: jax.Array, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> jax.Array:
    """(B * nW, ws, ws, C) -> (B, H, W, C): reverse ``window_partition_padded`` and drop padding."""
    x = window_reverse(windows, (window_size, window_size), pad_hw)
    return x[:, : hw[0], : hw[1], :]


def _row_chunked(tokens: int) -> bool:
    """Global attention row by row (``row_chunked_attention``): on CPU, from
    ``ROW_CHUNKED_TOKENS`` tokens; elsewhere the fused ``dot_product_attention``."""
    return tokens >= ROW_CHUNKED_TOKENS and jax.default_backend() == "cpu"


class Attention(nnx.Module):
    """Multi-head attention over a (B, H, W, C) map with optional decomposed relative positions.

    ``input_size`` is the (H, W) the relative-position tables ``rel_pos_h`` (2H - 1, head_dim) and
    ``rel_pos_w`` (2W - 1, head_dim) are made for; other sizes interpolate them (``get_rel_pos``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        input_size: tuple[int, int] | None = None,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = Linear(dim, dim * 3, use_bias=qkv_bias, rngs=rngs)
        self.proj = Linear(dim, dim, rngs=rngs)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required when use_rel_pos is True")
            self.rel_pos_h = nnx.Param(jnp.zeros((2 * input_size[0] - 1, head_dim)))
            self.rel_pos_w = nnx.Param(jnp.zeros((2 * input_size[1] - 1, head_dim)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B, HW, heads, hd)
        bias = None
        if self.use_rel_pos:
            q_heads = q.transpose(0, 2, 1, 3).reshape(b * self.num_heads, h * w, -1)
        if self.use_rel_pos and _row_chunked(h * w):
            rel_h, rel_w = decomposed_rel_pos(
                q_heads, self.rel_pos_h[...], self.rel_pos_w[...], (h, w), (h, w)
            )
            grid = (b, self.num_heads, h, w)
            q, k, v = (t.transpose(0, 2, 1, 3).reshape(*grid, -1) for t in (q, k, v))
            out = row_chunked_attention(
                q, k, v, rel_h.reshape(*grid, h), rel_w.reshape(*grid, w), self.scale
            )
            return self.proj(out.reshape(b, h, w, c))
        if self.use_rel_pos:
            bias = decomposed_rel_pos_bias(
                q_heads,
                self.rel_pos_h[...],
                self.rel_pos_w[...],
                (h, w),
                (h, w),
            ).reshape(b, self.num_heads, h * w, h * w)
        out = dot_product_attention(q, k, v, bias, self.scale)
        return self.proj(out.reshape(b, h, w, c))


class Block(nnx.Module):
    """ViTDet transformer block: windowed (window_size > 0, with padding) or global attention.

    (B, H, W, C) -> (B, H, W, C). ``mlp_layer(dim, hidden, rngs=)`` is injected: segment-anything
    uses ``MLPBlock`` (lin1 / lin2); detectron2 uses ``Mlp`` (fc1 / fc2). Norms use eps 1e-5.
    ``drop_path``: detectron2's per-sample stochastic depth on the attention and the MLP branch
    (identity at 0; segment-anything's encoder has none).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_layer: Callable[..., nnx.Module] = LayerNorm,
        use_rel_pos: bool = False,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
        mlp_layer: Callable[..., nnx.Module] = MLPBlock,
        drop_path: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.norm1 = norm_layer(dim, rngs=rngs)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            input_size=input_size if window_size == 0 else (window_size, window_size),
            rngs=rngs,
        )
        # drop_path == 0: an identity (the reference's nn.Identity) that holds no rng stream.
        self.drop_path = DropPath(drop_path, rngs=rngs if drop_path > 0.0 else None)
        self.norm2 = norm_layer(dim, rngs=rngs)
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio), rngs=rngs)
        self.window_size = window_size

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1:3]
            x, pad_hw = window_partition_padded(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))
