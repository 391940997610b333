"""Stochastic depth."""

from __future__ import annotations

import keras
from keras import ops

from ports.keras.layers.window import Tensor

__all__ = ["drop_path", "DropPath"]


def drop_path(
    x: Tensor,
    drop_prob: float = 0.0,
    training: bool | None = False,
    seed: keras.random.SeedGenerator | int | None = None,
) -> Tensor:
    """Zero whole samples with probability ``drop_prob`` and scale the survivors by 1 / keep.

    x: (B, ...); one Bernoulli(keep) draw per sample. Identity when not training or
    drop_prob == 0. ``seed`` is passed to ``keras.random`` (use a SeedGenerator under jit).
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
    mask = ops.cast(keras.random.uniform(shape, seed=seed) < keep, x.dtype)
    return x * mask / keep


class DropPath(keras.layers.Layer):
    """Per-sample stochastic depth (identity at inference). (B, ...) -> (B, ...)."""

    def __init__(self, drop_prob: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.drop_prob = drop_prob
        self.seed_generator = keras.random.SeedGenerator(name="seed_generator")

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        return drop_path(x, self.drop_prob, training, seed=self.seed_generator)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "drop_prob": self.drop_prob}
