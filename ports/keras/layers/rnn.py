"""``torch.nn.LSTM`` (batch first) in ``keras.ops``: PyTorch's variables, names and layout
(``zoo.layers.rnn``), so conversion is a copy and the round trip bit-identical.

Why not ``keras.layers.LSTM``: it keeps one bias (PyTorch's ``bias_ih + bias_hh``), so a
converted checkpoint cannot be written back as it came; its whole-sequence API has no step with
carried state the greedy decoder's loop needs without re-running the sequence; and its backends
pick their own kernels (cuDNN on GPUs). Here each layer projects the whole input sequence once
(``x W_ih^T + b_ih``), then steps ``h W_hh^T + b_hh`` over time in a Python loop over the static
length: plain ``keras.ops``, compiled by ``jax.jit`` / ``tf.function`` as any other graph.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from ports.keras.layers.window import Tensor

__all__ = ["LSTM", "lstm_step"]


def lstm_step(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM update from the pre-activations (B, 4H) in PyTorch's gate order i, f, g, o and
    the cell (B, H): the new (h, c)."""
    i, f, g, o = ops.split(gates, 4, axis=-1)
    c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
    return ops.sigmoid(o) * ops.tanh(c), c


@keras.saving.register_keras_serializable(package="vit_zoo")
class LSTM(keras.layers.Layer):
    """``nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)``.

    call(x (B, T, input_size), states=None or (h0, c0) each (num_layers, B, H)) ->
    (outputs (B, T, H) of the last layer, (h_n, c_n) each (num_layers, B, H)). PyTorch's
    initializer: U(-1/sqrt(H), 1/sqrt(H)) for every tensor.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers

    def build(self, input_shape: tuple | None = None) -> None:
        h = self.hidden_size
        bound = 1.0 / math.sqrt(h)
        init = keras.initializers.RandomUniform(-bound, bound)
        self.cells = []
        for k in range(self.num_layers):
            width = self.input_size if k == 0 else h
            shapes = (("weight_ih", (4 * h, width)), ("weight_hh", (4 * h, h)))
            shapes += (("bias_ih", (4 * h,)), ("bias_hh", (4 * h,)))
            self.cells.append(
                [self.add_weight(name=f"{n}_l{k}", shape=s, initializer=init) for n, s in shapes]
            )

    def call(self, x: Tensor, states: tuple[Tensor, Tensor] | None = None):
        b, steps = ops.shape(x)[0], x.shape[1]
        hs, cs = [], []
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.cells):
            if states is None:
                h = c = ops.zeros((b, self.hidden_size), dtype=x.dtype)
            else:
                h, c = states[0][k], states[1][k]
            projected = ops.matmul(x, ops.transpose(w_ih)) + b_ih  # (B, T, 4H)
            outputs = []
            for t in range(steps):
                gates = projected[:, t] + ops.matmul(h, ops.transpose(w_hh)) + b_hh
                h, c = lstm_step(gates, c)
                outputs.append(h)
            x = ops.stack(outputs, axis=1)
            hs.append(h)
            cs.append(c)
        return x, (ops.stack(hs), ops.stack(cs))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
        }
