"""Window multi-head self-attention with a relative position bias (Swin 2D, Video Swin 3D)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops
from keras.backend import standardize_dtype

from ports.keras.layers.dense import Dense
from ports.keras.layers.window import Tensor
from zoo.windows import bias_table_size, relative_position_index

__all__ = ["WindowAttention", "dot_product_attention", "repeat_leading", "softmax"]


def _fused_attention_available() -> bool:
    """Whether ``keras.ops.dot_product_attention`` reaches a fused kernel: PyTorch's
    ``scaled_dot_product_attention`` (CPU and GPU), or JAX on an accelerator. XLA:CPU (JAX and
    TensorFlow on CPU) has none."""
    backend = keras.config.backend()
    if backend == "torch":
        return True
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    return False


def dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor | None,
    scale: float,
    dropout: float = 0.0,
    seed: keras.random.SeedGenerator | None = None,
) -> Tensor:
    """``softmax(q k^T * scale + bias) v``; q, k, v (B, T, heads, hd), bias broadcastable to
    (B, heads, T, T). Returns (B, T, heads, hd).

    ``keras.ops.dot_product_attention`` where it is a fused kernel (``_fused_attention_available``)
    and there is no attention-probability dropout (``dropout > 0``, training), which it lacks,
    and the inputs are not float64, which the kernels compute in lower precision. Otherwise the
    product is written out heads-major with the scale folded into q: on XLA:CPU the bias add
    and the softmax fuse around the two products, and SAM's 4096-token global attention takes
    0.6x the time of the generic token-major form (``scripts/benchmark.py --profile``).
    """
    fused = _fused_attention_available()
    if fused and dropout <= 0.0 and standardize_dtype(q.dtype) != "float64":
        return ops.dot_product_attention(q, k, v, bias=bias, scale=scale)
    q = q * scale  # a Python float: ops.cast(scale, "float64") would pass through float32 on TF
    q, k, v = (ops.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))
    logits = ops.einsum("bnth,bnsh->bnts", q, k)
    if bias is not None:
        logits = logits + ops.cast(bias, logits.dtype)
    probs = softmax(logits)
    if dropout > 0.0:
        probs = keras.random.dropout(probs, dropout, seed=seed)
    return ops.transpose(ops.einsum("bnts,bnsh->bnth", probs, v), (0, 2, 1, 3))


def softmax(x: Tensor) -> Tensor:
    """``ops.softmax`` over the last axis; on the JAX backend with the derivative
    ``y * (dx - sum(y * dx))`` (``ports.flax.layers.window_attention.softmax`` says why: JAX's
    own differentiates through the exponentials, their sum and the division)."""
    if keras.backend.backend() != "jax":
        return ops.softmax(x, axis=-1)

    @ops.custom_gradient
    def fn(x):
        y = ops.softmax(x, axis=-1)

        def grad(upstream):
            return y * (upstream - ops.sum(upstream * y, axis=-1, keepdims=True))

        return y, grad

    return fn(x)


def repeat_leading(x: Tensor, n: int) -> Tensor:
    """``x`` (1, ...) repeated to (n, ...) on the JAX backend, whose gradient sums the n copies
    as a matrix product with a vector of ones (``ports.flax.layers.window_attention.
    repeat_leading`` has the measurements: autodiff's reduce over the leading axis ran at
    under 1 GB/s on XLA:CPU). Elsewhere ``x`` itself, broadcast where it is added."""
    if keras.backend.backend() != "jax":
        return x

    @ops.custom_gradient
    def repeat(x):
        def grad(upstream):
            summed = ops.matmul(ops.ones((1, n), upstream.dtype), ops.reshape(upstream, (n, -1)))
            return ops.reshape(summed, x.shape)

        return ops.broadcast_to(x, (n, *x.shape[1:])), grad

    return repeat(x)


def _per_image(bias: Tensor, images) -> Tensor:
    """The (nW, heads, N, N) bias of one image's windows for ``images`` images: (B * nW, heads,
    N, N), windows in the reference's order. Under XLA a broadcast the products read, not a copy
    (with ``repeat_leading``'s gradient on JAX); PyTorch copies it for B > 1, as the reference
    does at inference, and then takes its fused attention kernel (4-d inputs and mask). The
    windows stay in the batch axis: folding them into the head axis instead cost two more
    transposes of q, k, v and the output, 5% of Video Swin-T's Keras-JAX training step."""
    repeated = (
        repeat_leading(bias[None], images)
        if keras.backend.backend() == "jax"
        else ops.broadcast_to(bias[None], (images, *bias.shape))
    )
    return ops.reshape(repeated, (-1, *bias.shape[1:]))


class WindowAttention(keras.layers.Layer):
    """Self-attention inside one window with a learned relative position bias.

    The rank of ``window_size`` selects 2D (Swin) or 3D (Video Swin). The bias table has
    prod(2 * w - 1) rows; the relative position index is the cached table
    ``zoo.windows.relative_position_index`` (a constant, never a variable).

    When a window is smaller than configured (the input was smaller than the window), the first
    N x N entries of the index are used, as the official Video Swin code does.

    Call: x (B * nW, N, C) window tokens, mask (nW, N, N) additive or None -> (B * nW, N, C).
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
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        self.window_size = tuple(int(w) for w in window_size)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.qkv = Dense(dim * 3, use_bias=qkv_bias, name="qkv")
        self.attn_drop = attn_drop
        self.proj = Dense(dim, name="proj")
        self.proj_drop = keras.layers.Dropout(proj_drop, name="proj_drop")
        self.seed_generator = (
            keras.random.SeedGenerator(name="seed_generator") if attn_drop > 0.0 else None
        )
        # `mask` is an attention mask, not a Keras padding mask: never propagate it.
        self.supports_masking = True

    def build(self, input_shape: tuple) -> None:
        self.relative_position_bias_table = self.add_weight(
            name="relative_position_bias_table",
            shape=(bias_table_size(self.window_size), self.num_heads),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        self.qkv.build((*input_shape[:-1], self.dim))
        self.proj.build((*input_shape[:-1], self.dim))
        self.proj_drop.build((*input_shape[:-1], self.dim))

    def compute_mask(self, inputs, previous_mask=None):
        return None

    def relative_position_bias(self, n: int) -> Tensor:
        """(heads, N, N) bias for windows of N tokens."""
        index = ops.convert_to_tensor(relative_position_index(self.window_size)[:n, :n])
        table = ops.transpose(self.relative_position_bias_table)  # (heads, rows)
        return ops.take(table, index, axis=1)

    def call(self, x: Tensor, mask: Tensor | None = None, training: bool | None = None) -> Tensor:
        _, n, c = x.shape
        heads = self.num_heads
        windows = ops.shape(x)[0]  # B * nW
        qkv = ops.reshape(self.qkv(x), (-1, n, 3, heads, c // heads))
        bias = self.relative_position_bias(n)
        if mask is None:
            bias = repeat_leading(bias[None], windows)  # (1 or B * nW, heads, N, N)
        else:
            nw = mask.shape[0]
            bias = repeat_leading(bias[None], nw) + ops.cast(mask, bias.dtype)[:, None]
            bias = _per_image(bias, windows // nw)  # (B * nW, heads, N, N)
        q, k, v = ops.unstack(qkv, 3, axis=2)
        dropout = self.attn_drop if training else 0.0
        out = dot_product_attention(q, k, v, bias, self.scale, dropout, self.seed_generator)
        return self.proj_drop(self.proj(ops.reshape(out, (-1, n, c))), training=training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.dim)
