"""Transformer MLPs with exact (erf) GELU."""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from ports.flax.layers.linear import Linear

__all__ = ["GELU", "Mlp", "MLPBlock"]


class GELU(nnx.Module):
    """GELU as ``torch.nn.GELU``: exact (erf) unless ``approximate`` (tanh). Any shape."""

    def __init__(self, approximate: bool = False) -> None:
        self.approximate = approximate

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=self.approximate)


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
