"""Window multi-head self-attention with a relative position bias (Swin 2D, Video Swin 3D)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ports.flax.layers.drop import dropout_key
from ports.flax.layers.linear import Linear
from zoo.windows import bias_table_size, relative_position_index

__all__ = ["WindowAttention", "dot_product_attention", "repeat_leading", "softmax"]


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """``jax.nn.softmax`` whose derivative is ``y * (dx - sum(y * dx))``. JAX's own has that
    rule only under its ``jax_softmax_custom_jvp`` flag, off by default; without it autodiff
    goes through the exponentials, their sum and the division, and the backward reads two
    logits-sized tensors instead of one: 0.4 s of Video Swin-T's 3.1 s training step
    (``scripts/benchmark.py --train``)."""
    return jax.nn.softmax(x, axis=axis)


@softmax.defjvp
def _softmax_jvp(axis: int, primals, tangents):
    (x,), (dx,) = primals, tangents
    y = softmax(x, axis)
    return y, y * (dx - (y * dx).sum(axis, keepdims=True))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def repeat_leading(x: jax.Array, n: int) -> jax.Array:
    """``x`` (1, ...) broadcast to (n, ...), whose gradient sums the n copies as a matrix
    product with a vector of ones. Autodiff's own transpose of the broadcast is a reduce over
    the leading axis, which XLA:CPU ran at under 1 GB/s: 0.3 s for each of Video Swin-T's
    (64 windows, 3 heads, 392, 392) bias gradients, against 4 ms as a product
    (``scripts/benchmark.py --train --profile``)."""
    return jnp.broadcast_to(x, (n, *x.shape[1:]))


def _repeat_leading_fwd(x: jax.Array, n: int) -> tuple[jax.Array, None]:
    return repeat_leading(x, n), None


def _repeat_leading_bwd(n: int, _, g: jax.Array) -> tuple[jax.Array]:
    summed = jnp.ones((1, n), g.dtype) @ g.reshape(n, -1)
    return (summed.reshape(1, *g.shape[1:]),)


repeat_leading.defvjp(_repeat_leading_fwd, _repeat_leading_bwd)


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array | None,
    scale: float,
    rate: float = 0.0,
    key: jax.Array | None = None,
) -> jax.Array:
    """``softmax(q k^T * scale + bias) v`` with dropout ``rate`` on the probabilities (``key``
    draws it). q, k, v: (B, T, heads, hd); bias broadcastable to (B, heads, T, S).

    On accelerators without dropout, in float32 or narrower: ``jax.nn.dot_product_attention``
    (a fused kernel where the device has one). Otherwise, and always on CPU, the product is
    written out heads-major with the scale folded into q: XLA:CPU has no fused attention, and
    its generic ``dot_product_attention`` (token-major products, the scale applied to the
    logits) took 1.6x as long on SAM's 4096-token global attention (``scripts/benchmark.py
    --profile``); the bias add and softmax fuse around the two products. Float64 stays float64
    (the fused kernel accumulates its logits in float32)."""
    fused = jax.default_backend() != "cpu" and rate == 0.0 and q.dtype != jnp.float64
    if fused:
        return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale)
    q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q * jnp.asarray(scale, q.dtype), k, v))
    logits = jnp.einsum("bnth,bnsh->bnts", q, k)
    if bias is not None:
        logits = logits + bias
    probs = softmax(logits, -1)
    if rate > 0.0:
        keep = 1.0 - rate
        mask = jax.random.bernoulli(key, p=keep, shape=probs.shape)
        probs = jax.lax.select(mask, probs / keep, jnp.zeros_like(probs))
    return jnp.swapaxes(jnp.einsum("bnts,bnsh->bnth", probs, v), 1, 2)


class WindowAttention(nnx.Module):
    """Self-attention inside one window with a learned relative position bias.

    The rank of ``window_size`` selects 2D (Swin) or 3D (Video Swin). The bias table has
    prod(2 * w - 1) rows; the relative position index is the cached NumPy table of
    ``zoo.windows.relative_position_index`` (a constant, never a variable).

    When a window is smaller than configured (the input was smaller than the window), the first
    N x N entries of the index are used, as the official Video Swin code does.

    ``attn_drop`` is a float as in the reference; while not ``deterministic`` and > 0 the
    probabilities are dropped (unfused path), with keys from this module's ``rngs`` stream.
    """

    def __init__(
        self,
        dim: int,
        window_size: Sequence[int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.dim = dim
        self.window_size = tuple(int(w) for w in window_size)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        # torch.nn.init.trunc_normal_(std=0.02): normal truncated at the absolute bounds +-2.
        std = 0.02
        table = std * jax.random.truncated_normal(
            rngs.params(), -2.0 / std, 2.0 / std, (bias_table_size(self.window_size), num_heads)
        )
        self.relative_position_bias_table = nnx.Param(table)
        self.qkv = Linear(dim, dim * 3, use_bias=qkv_bias, rngs=rngs)
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim, rngs=rngs)
        self.proj_drop = nnx.Dropout(proj_drop, rngs=rngs)
        self.deterministic = False
        self.rngs = rngs["dropout"].fork()

    def relative_position_bias(self, n: int) -> jax.Array:
        """(heads, N, N) bias for windows of N tokens."""
        index = relative_position_index(self.window_size)[:n, :n].reshape(-1).astype(np.int32)
        table = self.relative_position_bias_table[...]
        return table[index].reshape(n, n, -1).transpose(2, 0, 1)

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array | None = None,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """x: (B * nW, N, C) window tokens; mask: (nW, N, N) additive or None -> (B * nW, N, C)."""
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B_, N, heads, hd)
        bias = self.relative_position_bias(n)[None]  # (1, heads, N, N)
        if mask is None:
            bias = repeat_leading(bias, b_)  # (B * nW, heads, N, N), a broadcast
        else:
            mask = jnp.asarray(mask)
            nw = mask.shape[0]
            bias = repeat_leading(bias, nw) + mask[:, None].astype(bias.dtype)  # (nW, heads, N, N)
            # Window w of every image shares bias[w]: a broadcast, not a copy per image.
            bias = repeat_leading(bias[None], b_ // nw).reshape(b_, self.num_heads, n, n)
        bias = bias.astype(q.dtype)
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic or self.attn_drop == 0.0:
            out = dot_product_attention(q, k, v, bias, self.scale)
        else:
            key = dropout_key(rngs, self.rngs, "dropout", "WindowAttention")
            out = dot_product_attention(q, k, v, bias, self.scale, self.attn_drop, key)
        return self.proj_drop(self.proj(out.reshape(b_, n, c)))

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view``.

        Args:
          deterministic: if True, no attention dropout.
        """
        if deterministic is not None:
            self.deterministic = deterministic
