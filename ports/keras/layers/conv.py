"""Transposed convolution with stride equal to its kernel (SAM's mask upscaling, ViTDet's pyramid).

With stride == kernel the output patches do not overlap: every input pixel becomes one k x k
output patch, ``out[b, k*i + p, k*j + q, o] = sum_c x[b, i, j, c] * kernel[p, q, c, o] + bias[o]``.
That is one matmul and a reshape, exact and fast on every backend.
"""

from __future__ import annotations

import keras
from keras import ops

from ports.keras.layers.window import Tensor

__all__ = ["ConvTranspose2d"]


class ConvTranspose2d(keras.layers.Layer):
    """``torch.nn.ConvTranspose2d(in_channels, out_channels, k, stride=k)``, channels-last.

    (B, H, W, in_channels) -> (B, k * H, k * W, out_channels). The kernel variable
    ``transpose_kernel`` is (k, k, in_channels, out_channels) (``weight_convert.rules``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int | None = None,
        bias: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if stride is not None and stride != kernel_size:
            raise ValueError(
                f"{self.name}: only stride == kernel_size is supported, got "
                f"kernel_size={kernel_size}, stride={stride}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.use_bias = kernel_size, bias

    def build(self, input_shape: tuple) -> None:
        k = self.kernel_size
        self.transpose_kernel = self.add_weight(
            name="transpose_kernel", shape=(k, k, self.in_channels, self.out_channels)
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.out_channels,), initializer="zeros"
            )

    def call(self, x: Tensor) -> Tensor:
        _, h, w, _ = x.shape
        k, c = self.kernel_size, self.out_channels
        y = ops.einsum("bhwi,pqio->bhpwqo", x, ops.cast(self.transpose_kernel, x.dtype))
        y = ops.reshape(y, (-1, h * k, w * k, c))
        return y + ops.cast(self.bias, x.dtype) if self.use_bias else y

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        b, h, w, _ = input_shape
        k = self.kernel_size
        return (b, None if h is None else h * k, None if w is None else w * k, self.out_channels)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "bias": self.use_bias,
        }
