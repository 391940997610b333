"""Transformer MLPs with exact (erf) GELU."""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from ports.flax.layers.linear import Linear

__all__ = ["GELU", "Mlp", "MLPBlock", "gelu"]

_SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)


@jax.custom_jvp
def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU as PyTorch computes it, ``x / 2 * (1 + erf(x / sqrt(2)))``, with PyTorch's
    derivative ``cdf + x * pdf``. Autodiff's own derivative of ``jax.nn.gelu`` keeps the
    linearized erf's terms and reads them back: 60 ms against 32 ms here for the GELU of a
    (25088, 384) training step of fc1 -> GELU -> fc2 on two cores (~0.24 s of a Swin-T step;
    PyTorch's: 48 ms). Any shape and float dtype."""
    return x * 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF))


@gelu.defjvp
def _gelu_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    cdf = 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF))
    pdf = jax.numpy.exp(-0.5 * x * x) * _INV_SQRT_2PI
    return x * cdf, dx * (cdf + x * pdf)


class GELU(nnx.Module):
    """GELU as ``torch.nn.GELU``: exact (erf) unless ``approximate`` (tanh). Any shape."""

    def __init__(self, approximate: bool = False) -> None:
        self.approximate = approximate

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=True) if self.approximate else gelu(x)


class Mlp(nnx.Module):
    """fc1 -> act -> drop -> fc2 -> drop (Swin, Video Swin, timm and detectron2 naming).

    Input and output: (..., in_features) -> (..., out_features).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nnx.Module] = GELU,
        drop: float = 0.0,
        bias: bool = True,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = Linear(in_features, hidden_features, use_bias=bias, rngs=rngs)
        self.act = act_layer()
        self.drop1 = nnx.Dropout(drop, rngs=rngs)
        self.fc2 = Linear(hidden_features, out_features, use_bias=bias, rngs=rngs)
        self.drop2 = nnx.Dropout(drop, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class MLPBlock(nnx.Module):
    """lin1 -> act -> lin2 (segment-anything naming). (..., embedding_dim) -> same."""

    def __init__(
        self,
        embedding_dim: int,
        mlp_dim: int,
        act: Callable[[], nnx.Module] = GELU,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.lin1 = Linear(embedding_dim, mlp_dim, rngs=rngs)
        self.lin2 = Linear(mlp_dim, embedding_dim, rngs=rngs)
        self.act = act()

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.lin2(self.act(self.lin1(x)))
