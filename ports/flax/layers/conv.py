"""Transposed convolution with stride equal to its kernel (SAM's mask upscaling, ViTDet's pyramid).

With stride == kernel the output patches do not overlap: every input pixel becomes one k x k
output patch, ``out[b, k*i + p, k*j + q, o] = sum_c x[b, i, j, c] * kernel[p, q, c, o] + bias[o]``.
That is one matmul and a reshape, exact and fast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype

__all__ = ["ConvTranspose2d"]


class ConvTranspose2d(nnx.Module):
    """``torch.nn.ConvTranspose2d(in_channels, out_channels, k, stride=k)``, channels-last.

    (B, H, W, in_channels) -> (B, k * H, k * W, out_channels). The parameter
    ``transpose_kernel`` is (k, k, in_channels, out_channels) (``weight_convert.rules``).
    ``dtype`` / ``param_dtype`` as ``nnx.ConvTranspose``'s: the computation's dtype (None: what
    the input and parameters promote to) and the parameters'.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int | None = None,
        bias: bool = True,
        *,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        if stride is not None and stride != kernel_size:
            raise ValueError(
                f"ConvTranspose2d: only stride == kernel_size is supported, got "
                f"kernel_size={kernel_size}, stride={stride}"
            )
        k = kernel_size
        self.kernel_size, self.out_channels = k, out_channels
        self.dtype, self.param_dtype = dtype, param_dtype
        init = nnx.initializers.lecun_normal()
        shape = (k, k, in_channels, out_channels)
        self.transpose_kernel = nnx.Param(init(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_channels,), param_dtype)) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        k = self.kernel_size
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = promote_dtype((x, self.transpose_kernel[...], bias), dtype=self.dtype)
        y = jnp.einsum("bhwi,pqio->bhpwqo", x, kernel)
        y = y.reshape(b, h * k, w * k, self.out_channels)
        return y if bias is None else y + bias
