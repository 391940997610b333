"""Transformer MLPs with exact (erf) GELU."""

from __future__ import annotations

from collections.abc import Callable

import keras

from ports.keras.layers.dense import Dense
from ports.keras.layers.window import Tensor

__all__ = ["GELU", "Mlp", "MLPBlock", "gelu"]

_SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)


def _exact_gelu(x: Tensor) -> Tensor:
    return x * 0.5 * (1.0 + keras.ops.erf(x * _SQRT_HALF))


def gelu(x: Tensor) -> Tensor:
    """Exact GELU as PyTorch computes it, ``x / 2 * (1 + erf(x / sqrt(2)))``; on the JAX
    backend with PyTorch's derivative ``cdf + x * pdf``, recomputed from ``x`` in the backward
    pass (``ports.flax.layers.mlp.gelu`` has the measurements: autodiff's own keeps the
    linearized erf's terms and reads them back)."""
    if keras.backend.backend() != "jax":
        return _exact_gelu(x)

    @keras.ops.custom_gradient
    def fn(x):
        def grad(upstream):
            cdf = 0.5 * (1.0 + keras.ops.erf(x * _SQRT_HALF))
            pdf = keras.ops.exp(-0.5 * x * x) * _INV_SQRT_2PI
            return upstream * (cdf + x * pdf)

        return _exact_gelu(x), grad

    return fn(x)


class GELU(keras.layers.Layer):
    """GELU activation; exact (erf) unless ``approximate`` (tanh), like ``torch.nn.GELU``.

    (...) -> (...). ``approximate`` is read at call time. The exact form is written out as
    PyTorch computes it, ``x / 2 * (1 + erf(x / sqrt(2)))``: TensorFlow's own exact GELU is
    off by ~1e-8 relative in float64 (where every other op here is exact).
    """

    def __init__(self, approximate: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.approximate = approximate

    def call(self, x: Tensor) -> Tensor:
        if self.approximate:
            return keras.activations.gelu(x, approximate=True)
        return gelu(x)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "approximate": self.approximate}


class Mlp(keras.layers.Layer):
    """fc1 -> act -> drop -> fc2 -> drop (Swin, Video Swin, timm and detectron2 naming).

    Input and output: (..., in_features) -> (..., out_features).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[..., keras.layers.Layer] = GELU,
        drop: float = 0.0,
        bias: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.in_features = in_features
        self.hidden_features = hidden_features or in_features
        self.out_features = out_features or in_features
        self.fc1 = Dense(self.hidden_features, use_bias=bias, name="fc1")
        self.act = act_layer(name="act")
        self.drop1 = keras.layers.Dropout(drop, name="drop1")
        self.fc2 = Dense(self.out_features, use_bias=bias, name="fc2")
        self.drop2 = keras.layers.Dropout(drop, name="drop2")

    def build(self, input_shape: tuple) -> None:
        # Every child is built here, inside this layer's name scope, so that each one has its
        # variable path (Keras layers built at init, such as Dropout, would otherwise have none).
        hidden = (*input_shape[:-1], self.hidden_features)
        self.fc1.build((*input_shape[:-1], self.in_features))
        self.act.build(hidden)
        self.drop1.build(hidden)
        self.fc2.build(hidden)
        self.drop2.build((*input_shape[:-1], self.out_features))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        # `training` is passed on explicitly so that `stateless_call` (which skips the call
        # context) still reaches the dropouts.
        x = self.drop1(self.act(self.fc1(x)), training=training)
        return self.drop2(self.fc2(x), training=training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.out_features)


class MLPBlock(keras.layers.Layer):
    """lin1 -> act -> lin2 (segment-anything naming). (..., embedding_dim) -> same."""

    def __init__(
        self,
        embedding_dim: int,
        mlp_dim: int,
        act: Callable[..., keras.layers.Layer] = GELU,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim
        self.mlp_dim = mlp_dim
        self.lin1 = Dense(mlp_dim, name="lin1")
        self.lin2 = Dense(embedding_dim, name="lin2")
        self.act = act(name="act")

    def build(self, input_shape: tuple) -> None:
        self.lin1.build((*input_shape[:-1], self.embedding_dim))
        self.lin2.build((*input_shape[:-1], self.mlp_dim))
        self.act.build((*input_shape[:-1], self.mlp_dim))

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        return self.lin2(self.act(self.lin1(x)))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.embedding_dim)
