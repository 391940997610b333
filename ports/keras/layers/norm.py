"""Normalization layers (channels-last)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ports.keras.layers.dense import Dense

__all__ = ["BatchNorm2d", "ConditionalBatchNorm2d", "LayerNorm", "LayerNorm2d", "unbiased_variance"]


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


def unbiased_variance(var, n: int):
    """PyTorch's running-variance input: the biased batch variance ``var`` of ``n`` values per
    channel times ``n / (n - 1)`` (Keras's own ``BatchNormalization`` keeps the biased one)."""
    return var * (n / (n - 1))


class BatchNorm2d(keras.layers.Layer):
    """``torch.nn.BatchNorm2d`` channels-last: (B, H, W, C) -> (B, H, W, C), normalizing each
    channel (the last axis) over the batch and the spatial axes.

    PyTorch's arguments and conventions, not ``keras.layers.BatchNormalization``'s: ``eps``
    (1e-5; Keras's default is 1e-3), ``momentum`` in PyTorch's sense (the new batch's weight,
    0.1; Keras's momentum is ``1 - momentum``; None: the cumulative average ``1 /
    num_batches_tracked``), ``affine``, ``track_running_stats``. Inference
    (``training=False``, the default) uses the running statistics; training
    (``model(x, training=True)``, ``fit``) normalizes with the biased batch variance and updates
    ``moving_mean`` / ``moving_variance`` as PyTorch updates ``running_mean`` / ``running_var``:
    the unbiased batch variance (``unbiased_variance``) goes into the running one, and
    ``num_batches_tracked`` counts the updates. The updates are variable assignments, so they
    are carried by ``stateless_call`` (the JAX backend's ``fit``) like Keras's own.

    Variables: ``gamma`` / ``beta`` (PyTorch's ``weight`` / ``bias``), ``moving_mean`` /
    ``moving_variance`` (``running_mean`` / ``running_var``): Keras's names, mapped by
    ``weight_convert.rules``; ``num_batches_tracked`` is int32 on every backend (JAX has no int64
    without x64; the converter restores PyTorch's int64). Inputs in float16 / bfloat16 are
    normalized in float32 and the output cast back, as Keras's layer does.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_features = num_features
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats

    def build(self, input_shape: tuple) -> None:
        if input_shape[-1] is not None and input_shape[-1] != self.num_features:
            raise ValueError(
                f"{self.name}: expected {self.num_features} channels (last axis), "
                f"got input shape {tuple(input_shape)}"
            )
        c = (self.num_features,)
        if self.affine:
            self.gamma = self.add_weight(name="gamma", shape=c, initializer="ones", autocast=False)
            self.beta = self.add_weight(name="beta", shape=c, initializer="zeros", autocast=False)
        if self.track_running_stats:
            stat = dict(shape=c, trainable=False, autocast=False)
            self.moving_mean = self.add_weight(name="moving_mean", initializer="zeros", **stat)
            self.moving_variance = self.add_weight(
                name="moving_variance", initializer="ones", **stat
            )
            self.num_batches_tracked = self.add_weight(
                name="num_batches_tracked",
                shape=(),
                dtype="int32",
                initializer="zeros",
                trainable=False,
            )

    def call(self, x, training: bool = False):
        out_dtype = keras.backend.standardize_dtype(x.dtype)
        dtype = "float32" if out_dtype in ("float16", "bfloat16") else out_dtype
        x = ops.cast(x, dtype)
        axes = tuple(range(len(x.shape) - 1))
        if training or not self.track_running_stats:
            mean = ops.mean(x, axis=axes)
            var = ops.mean(ops.square(x - mean), axis=axes)  # biased, as PyTorch normalizes
            if training and self.track_running_stats:
                self._update(mean, var, x.shape)
        else:
            mean = ops.cast(self.moving_mean, dtype)
            var = ops.cast(self.moving_variance, dtype)
        y = (x - mean) / ops.sqrt(var + self.eps)
        if self.affine:
            y = y * ops.cast(self.gamma, dtype) + ops.cast(self.beta, dtype)
        return ops.cast(y, out_dtype)

    def _update(self, mean, var, shape: tuple) -> None:
        n = values_per_channel(shape, self.name)
        count = self.num_batches_tracked + 1
        self.num_batches_tracked.assign(count)
        if self.momentum is None:
            factor = 1.0 / ops.cast(count, mean.dtype)
        else:
            factor = self.momentum
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, var)):
            if moving is self.moving_variance:
                batch = unbiased_variance(batch, n)
            batch = ops.stop_gradient(ops.cast(batch, moving.dtype))
            moving.assign((1.0 - factor) * moving + factor * batch)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
        }


def values_per_channel(shape: tuple, name: str) -> int:
    """How many values each channel of a channels-last ``shape`` has (every axis but the last,
    known when the layer runs); ValueError for one, as PyTorch refuses it in training."""
    n = int(np.prod([int(d) for d in shape[:-1]]))
    if n <= 1:
        raise ValueError(
            f"{name}: expected more than 1 value per channel when training, got input shape "
            f"{tuple(shape)}"
        )
    return n


@keras.saving.register_keras_serializable(package="vit_zoo")
class ConditionalBatchNorm2d(keras.layers.Layer):
    """``zoo.layers.ConditionalBatchNorm2d`` channels-last: x (B, H, W, C), c (B, cond_dim) ->
    ``(gamma + gamma_c(c)) * bn(x) + (beta + beta_c(c))``, ``bn`` this module's PyTorch
    ``BatchNorm2d`` without affine (momentum in PyTorch's sense, not Keras's: the new batch's
    weight; the unbiased variance into ``moving_variance``). Variables ``gamma`` / ``beta``
    (PyTorch's ``weight`` / ``bias``), ``bn/moving_*``, ``gamma_c`` / ``beta_c`` Dense."""

    def __init__(
        self,
        num_features: int,
        cond_dim: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_features, self.cond_dim = num_features, cond_dim
        self.eps, self.momentum = eps, momentum
        self.bn = BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False, name="bn")
        self.gamma_c = Dense(num_features, kernel_initializer="zeros", name="gamma_c")
        self.beta_c = Dense(num_features, kernel_initializer="zeros", name="beta_c")

    def build(self, x_shape: tuple, c_shape: tuple | None = None) -> None:
        c = (self.num_features,)
        self.gamma = self.add_weight(name="gamma", shape=c, initializer="ones")
        self.beta = self.add_weight(name="beta", shape=c, initializer="zeros")
        self.bn.build((None, None, None, self.num_features))
        self.gamma_c.build((None, self.cond_dim))
        self.beta_c.build((None, self.cond_dim))

    def call(self, x, c, training: bool = False):
        gamma = self.gamma + self.gamma_c(c)
        beta = self.beta + self.beta_c(c)
        return gamma[:, None, None, :] * self.bn(x, training=training) + beta[:, None, None, :]

    def compute_output_shape(self, x_shape: tuple, c_shape: tuple | None = None) -> tuple:
        return x_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_features": self.num_features,
            "cond_dim": self.cond_dim,
            "eps": self.eps,
            "momentum": self.momentum,
        }
