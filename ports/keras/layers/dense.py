"""``keras.layers.Dense`` whose product is one 2-D matrix product, whatever the input's rank."""

from __future__ import annotations

import keras

from ports.keras.layers.window import Tensor

__all__ = ["Dense"]


@keras.saving.register_keras_serializable(package="vit_zoo")
class Dense(keras.layers.Dense):
    """``keras.layers.Dense`` (same variables, arguments and result) that folds the input's
    leading axes into one before the product and unfolds them after.

    Why: an N-D ``ops.matmul`` is a ``dot_general`` over the last axis. Under a gradient on
    XLA:CPU (the JAX backend) the kernel's gradient of such a product is taken against a
    transposed copy of the incoming cotangent, and XLA fuses the residual stream's whole
    elementwise cotangent chain (every later block's LayerNorm backward) into each of those
    copies, once per Dense. As a (tokens, features) matrix product the copies vanish
    (``ports.flax.layers.linear.Linear`` has the measurements)."""

    def call(self, inputs: Tensor, training: bool | None = None) -> Tensor:
        if len(inputs.shape) <= 2:
            return super().call(inputs, training=training)
        lead = keras.ops.shape(inputs)[:-1]
        y = super().call(keras.ops.reshape(inputs, (-1, inputs.shape[-1])), training=training)
        return keras.ops.reshape(y, (*lead, self.units))
