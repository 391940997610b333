"""Pooling layers, Keras 3 (``keras.ops`` only, channels-last), as PyTorch pools: ``MaxPool2d``
padded with -inf as PyTorch pads, and ``nn.AdaptiveAvgPool2d`` as two contractions with constant
averaging matrices (``zoo.pooling.adaptive_avg_matrix``: PyTorch's start / end bins, overlapping
or repeating where the output does not divide the map), exact at any input size."""

from __future__ import annotations

import keras
from keras import ops

from ports.keras.layers.window import Tensor
from zoo.pooling import adaptive_avg_matrix, pool_arguments, pooled_size

__all__ = ["PAD_VALUE", "AdaptiveAvgPool2d", "MaxPool2d", "adaptive_avg_pool2d"]


def adaptive_avg_pool2d(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H, W, C) -> (B, h, w, C) as ``F.adaptive_avg_pool2d`` of the channels-first map; H and
    W must be known when traced (the matrices are constants of their sizes)."""
    _, height, width, _ = x.shape
    if height is None or width is None:
        raise ValueError(f"adaptive_avg_pool2d needs the map's height and width, got {x.shape}")
    if (height, width) == tuple(size):
        return x  # identity bins: exact
    dtype = keras.backend.standardize_dtype(x.dtype)
    rows = ops.convert_to_tensor(adaptive_avg_matrix(height, size[0]).astype(dtype))
    cols = ops.convert_to_tensor(adaptive_avg_matrix(width, size[1]).astype(dtype))
    return ops.einsum("hH,bHWc,wW->bhwc", rows, x, cols)


class AdaptiveAvgPool2d(keras.layers.Layer):
    """``nn.AdaptiveAvgPool2d((h, w))`` on a channels-last map (B, H, W, C) -> (B, h, w, C)."""

    def __init__(self, output_size: tuple[int, int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.output_size = tuple(int(s) for s in output_size)

    def call(self, x: Tensor) -> Tensor:
        return adaptive_avg_pool2d(x, self.output_size)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self) -> dict:
        return {**super().get_config(), "output_size": self.output_size}


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
