"""Normalization layers (channels-last)."""

from __future__ import annotations

import keras

__all__ = ["LayerNorm", "LayerNorm2d"]


def LayerNorm(
    dim: int, name: str | None = None, eps: float = 1e-5, **kwargs
) -> keras.layers.LayerNormalization:
    """Channels-last LayerNorm with PyTorch's eps (1e-5), built lazily. (..., dim) -> same.

    ``dim`` is accepted for the reference's call convention ``norm_layer(dim)``.
    """
    return keras.layers.LayerNormalization(axis=-1, epsilon=eps, name=name, **kwargs)


class LayerNorm2d(keras.layers.LayerNormalization):
    """LayerNorm over the channel axis of a channels-last map (segment-anything / detectron2).

    (B, H, W, C) -> (B, H, W, C); the reference applies the same normalization to (B, C, H, W).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, **kwargs) -> None:
        super().__init__(axis=-1, epsilon=eps, **kwargs)
        self.num_channels = num_channels
        self.eps = eps

    def build(self, input_shape: tuple) -> None:
        if input_shape[-1] is not None and input_shape[-1] != self.num_channels:
            raise ValueError(
                f"{self.name}: expected {self.num_channels} channels (last axis), "
                f"got input shape {tuple(input_shape)}"
            )
        super().build(input_shape)

    def get_config(self) -> dict:
        config = keras.layers.Layer.get_config(self)
        return {**config, "num_channels": self.num_channels, "eps": self.eps}
