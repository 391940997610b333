"""``torch.nn.LSTM`` (batch first) in Flax NNX: PyTorch's variables, names and layout
(``zoo.layers.rnn``), so conversion is a copy and the round trip bit-identical.

Why not ``nnx.RNN`` with ``nnx.LSTMCell``: the cell keeps one ``nnx.Linear`` per gate and input
(``ii``, ``if``, ``ig``, ``io``, ``hi``, ...) with a bias on the hidden side only, a tree that is
not PyTorch's (two biases per gate). Here each layer projects the whole sequence once
(``x W_ih^T + b_ih``) and ``jax.lax.scan`` steps ``h W_hh^T + b_hh`` over time: one compiled loop
body whatever the length, jit-friendly.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["LSTM", "lstm_step"]


def lstm_step(gates: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One LSTM update from the pre-activations (B, 4H) in PyTorch's gate order i, f, g, o and
    the cell (B, H): the new (h, c)."""
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


class LSTM(nnx.Module):
    """``nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)``.

    __call__(x (B, T, input_size), states=None or (h0, c0) each (num_layers, B, H)) ->
    (outputs (B, T, H) of the last layer, (h_n, c_n) each (num_layers, B, H)). PyTorch's
    initializer: U(-1/sqrt(H), 1/sqrt(H)) for every tensor.
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, *, rngs: nnx.Rngs
    ) -> None:
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        h = hidden_size
        bound = 1.0 / math.sqrt(h)
        for k in range(num_layers):
            width = input_size if k == 0 else h
            shapes = (("weight_ih", (4 * h, width)), ("weight_hh", (4 * h, h)))
            shapes += (("bias_ih", (4 * h,)), ("bias_hh", (4 * h,)))
            for name, shape in shapes:
                value = jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)
                setattr(self, f"{name}_l{k}", nnx.Param(value))

    def __call__(
        self, x: jax.Array, states: tuple[jax.Array, jax.Array] | None = None
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        b = x.shape[0]
        hs, cs = [], []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (
                getattr(self, f"{n}_l{k}")[...]
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            if states is None:
                h = c = jnp.zeros((b, self.hidden_size), x.dtype)
            else:
                h, c = states[0][k], states[1][k]
            projected = x @ w_ih.T + b_ih  # (B, T, 4H)

            def step(carry, gates_x, w_hh=w_hh, b_hh=b_hh):
                h, c = lstm_step(gates_x + carry[0] @ w_hh.T + b_hh, carry[1])
                return (h, c), h

            (h, c), ys = jax.lax.scan(step, (h, c), jnp.swapaxes(projected, 0, 1))
            x = jnp.swapaxes(ys, 0, 1)
            hs.append(h)
            cs.append(c)
        return x, (jnp.stack(hs), jnp.stack(cs))
