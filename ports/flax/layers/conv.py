"""Transposed convolution with stride equal to its kernel (SAM's mask upscaling, ViTDet's pyramid).

With stride == kernel the output patches do not overlap: every input pixel becomes one k x k
output patch, ``out[b, k*i + p, k*j + q, o] = sum_c x[b, i, j, c] * kernel[p, q, c, o] + bias[o]``.
That is one matmul and a reshape, exact and fast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ConvTranspose2d"]


class ConvTranspose2d(nnx.Module):
    """``torch.nn.ConvTranspose2d(in_channels, out_channels, k, stride=k)``, channels-last.

    (B, H, W, in_channels) -> (B, k * H, k * W, out_channels). The parameter
    ``transpose_kernel`` is (k, k, in_channels, out_channels) (``weight_convert.rules``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int | None = None,
        bias: bool = True,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        if stride is not None and stride != kernel_size:
            raise ValueError(
                f"ConvTranspose2d: only stride == kernel_size is supported, got "
                f"kernel_size={kernel_size}, stride={stride}"
            )
        k = kernel_size
        self.kernel_size, self.out_channels = k, out_channels
        init = nnx.initializers.lecun_normal()
        self.transpose_kernel = nnx.Param(init(rngs.params(), (k, k, in_channels, out_channels)))
        self.bias = nnx.Param(jnp.zeros((out_channels,))) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        k = self.kernel_size
        y = jnp.einsum("bhwi,pqio->bhpwqo", x, self.transpose_kernel[...])
        y = y.reshape(b, h * k, w * k, self.out_channels)
        return y if self.bias is None else y + self.bias[...]
