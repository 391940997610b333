"""Normalization layers with PyTorch's epsilons and two-pass variance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ports.flax.layers.linear import Linear

__all__ = ["BatchNorm2d", "ConditionalBatchNorm2d", "LayerNorm", "LayerNorm2d", "unbiased_variance"]


def LayerNorm(dim: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """Channels-last LayerNorm over the last axis with PyTorch's eps (1e-5). (..., dim) -> same."""
    return nnx.LayerNorm(dim, epsilon=1e-5, use_fast_variance=False, rngs=rngs)


class LayerNorm2d(nnx.LayerNorm):
    """The reference's channels-first LayerNorm2d, channels-last: normalizes the last axis.

    (B, H, W, C) -> (B, H, W, C); parameters ``scale`` / ``bias`` of shape (C,).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, *, rngs: nnx.Rngs) -> None:
        super().__init__(num_channels, epsilon=eps, use_fast_variance=False, rngs=rngs)


def unbiased_variance(var: jax.Array, n: int) -> jax.Array:
    """PyTorch's running-variance input: the biased batch variance ``var`` of ``n`` values per
    channel times ``n / (n - 1)`` (``nnx.BatchNorm`` keeps the biased one)."""
    return var * (n / (n - 1))


class BatchNorm2d(nnx.Module):
    """``torch.nn.BatchNorm2d`` channels-last: (B, H, W, C) -> (B, H, W, C), normalizing each
    channel (the last axis) over the batch and the spatial axes.

    PyTorch's arguments and conventions, not ``nnx.BatchNorm``'s: ``eps`` (1e-5), ``momentum``
    in PyTorch's sense (the new batch's weight, 0.1; nnx's momentum is ``1 - momentum``; None:
    the cumulative average ``1 / num_batches_tracked``), ``affine``, ``track_running_stats``.
    ``use_running_average`` (True after ``model.eval()``, False after ``model.train()``; also set
    by ``nnx.view(model, deterministic=...)``, the flag the rest of the port trains with)
    chooses the running statistics or the batch's; in training the biased batch variance
    normalizes, ``running_mean`` / ``running_var`` are updated as PyTorch updates them (the
    unbiased variance, ``unbiased_variance``, into ``running_var``) and ``num_batches_tracked``
    counts the updates. The statistics are ``nnx.BatchStat`` variables, so the updates leave
    ``nnx.jit`` / ``nnx.grad`` as nnx.BatchNorm's do; optimizers (``nnx.Param``) skip them.

    Variables: ``scale`` / ``bias`` (nnx's names for PyTorch's ``weight`` / ``bias``),
    ``running_mean`` / ``running_var`` (PyTorch's: nnx's ``mean`` / ``var`` are too generic to
    rename globally in ``weight_convert.rules``), ``num_batches_tracked`` int32 (JAX has no
    int64 without x64; the converter restores PyTorch's int64). ``dtype``: the output's dtype
    (None: what the input and parameters promote to); the statistics are computed in at least
    float32, as ``nnx.BatchNorm`` does.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        use_running_average: bool = False,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        del rngs  # no random initializer: ones and zeros, as PyTorch's
        c = (num_features,)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.use_running_average = use_running_average
        self.dtype, self.param_dtype = dtype, param_dtype
        self.scale = nnx.Param(jnp.ones(c, param_dtype)) if affine else None
        self.bias = nnx.Param(jnp.zeros(c, param_dtype)) if affine else None
        if track_running_stats:
            self.running_mean = nnx.BatchStat(jnp.zeros(c, param_dtype))
            self.running_var = nnx.BatchStat(jnp.ones(c, param_dtype))
            self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def set_view(
        self, deterministic: bool | None = None, use_running_average: bool | None = None
    ) -> None:
        """``nnx.view``: ``use_running_average``, or else ``deterministic`` (the port's
        training flag: ``weight_convert.frameworks.flax_port.mode``)."""
        if use_running_average is not None:
            self.use_running_average = use_running_average
        elif deterministic is not None:
            self.use_running_average = deterministic

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != self.num_features:
            raise ValueError(
                f"BatchNorm2d: expected {self.num_features} channels (last axis), got input "
                f"shape {tuple(x.shape)}"
            )
        out_dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        dtype = jnp.promote_types(out_dtype, jnp.float32)
        x = x.astype(dtype)
        axes = tuple(range(x.ndim - 1))
        training = not self.use_running_average
        if training or not self.track_running_stats:
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)  # biased, as PyTorch normalizes
            if training and self.track_running_stats:
                self._update(mean, var, x.shape)
        else:
            mean = self.running_mean[...].astype(dtype)
            var = self.running_var[...].astype(dtype)
        y = (x - mean) / jnp.sqrt(var + self.eps)
        if self.affine:
            y = y * self.scale[...].astype(dtype) + self.bias[...].astype(dtype)
        return y.astype(out_dtype)

    def _update(self, mean: jax.Array, var: jax.Array, shape: tuple) -> None:
        n = int(np.prod(shape[:-1]))
        if n <= 1:
            raise ValueError(
                "BatchNorm2d: expected more than 1 value per channel when training, got input "
                f"shape {tuple(shape)}"
            )
        count = self.num_batches_tracked[...] + 1
        self.num_batches_tracked[...] = count
        factor = 1.0 / count.astype(mean.dtype) if self.momentum is None else self.momentum
        var = unbiased_variance(var, n)
        for stat, batch in ((self.running_mean, mean), (self.running_var, var)):
            old = stat[...]
            batch = jax.lax.stop_gradient(batch).astype(old.dtype)
            stat[...] = (1.0 - factor) * old + factor * batch


class ConditionalBatchNorm2d(nnx.Module):
    """``zoo.layers.ConditionalBatchNorm2d`` channels-last: x (B, H, W, C), c (B, cond_dim) ->
    ``(scale + gamma_c(c)) * bn(x) + (bias + beta_c(c))``, ``bn`` this module's PyTorch
    ``BatchNorm2d`` without affine (momentum in PyTorch's sense, not nnx's; the unbiased
    variance into ``running_var``; ``model.train()`` / ``nnx.view`` switch it). Variables
    ``scale`` / ``bias`` (PyTorch's ``weight`` / ``bias``), ``bn.running_*``, ``gamma_c`` /
    ``beta_c`` Linear (zero-initialized)."""

    def __init__(
        self,
        num_features: int,
        cond_dim: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        c = (num_features,)
        self.scale = nnx.Param(jnp.ones(c, jnp.float32))
        self.bias = nnx.Param(jnp.zeros(c, jnp.float32))
        self.bn = BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False)
        zeros = nnx.initializers.zeros_init()
        self.gamma_c = Linear(cond_dim, num_features, kernel_init=zeros, rngs=rngs)
        self.beta_c = Linear(cond_dim, num_features, kernel_init=zeros, rngs=rngs)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        gamma = self.scale[...] + self.gamma_c(c)
        beta = self.bias[...] + self.beta_c(c)
        return gamma[:, None, None, :] * self.bn(x) + beta[:, None, None, :]
