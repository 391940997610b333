"""Pooling layers (channels-last) with PyTorch's padding."""

from __future__ import annotations

import keras
from keras import ops

from zoo.pooling import pool_arguments, pooled_size

__all__ = ["PAD_VALUE", "MaxPool2d"]

#: what ``MaxPool2d`` pads with: -inf, as PyTorch (zeros would win over a border of negative
#: values; Keras's ``padding="same"`` also pads asymmetrically: (0, 1) for a 3x3 window, stride
#: 2 on an even side, where PyTorch pads (1, 1))
PAD_VALUE = float("-inf")


class MaxPool2d(keras.layers.Layer):
    """``torch.nn.MaxPool2d(kernel_size, stride, padding)`` (floor mode) channels-last:
    (B, H, W, C) -> (B, (H + 2p - k) // s + 1, (W + 2p - k) // s + 1, C), padded with
    ``PAD_VALUE`` (-inf)."""

    def __init__(
        self,
        kernel_size: int,
        stride: int | None = None,
        padding: int = 0,
        dilation: int = 1,
        ceil_mode: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_size, self.stride, self.padding = pool_arguments(
            kernel_size, stride, padding, ceil_mode, dilation
        )

    def call(self, x):
        p = self.padding
        if p:
            x = ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=PAD_VALUE)
        k, s = self.kernel_size, self.stride
        return ops.max_pool(x, k, s, padding="valid", data_format="channels_last")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        b, h, w, c = input_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        return (b, pooled_size(h, k, s, p), pooled_size(w, k, s, p), c)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
        }
