"""Recurrent layers. The reference is PyTorch's own ``nn.LSTM``; the ports define ``LSTM``
(``ports.keras.layers.rnn``, ``ports.flax.layers.rnn``) with its arguments and its variables
under its names, in its layout: ``weight_ih_l{k}`` (4H, in), ``weight_hh_l{k}`` (4H, H),
``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,), the four gates stacked i, f, g, o. Those leaf names are
in no layout rule (``weight_convert.rules``), so the tensors convert as they are and a round trip
is bit-identical (Keras's own ``keras.layers.LSTM`` keeps one bias, the sum of PyTorch's two:
``weight_convert.layouts.captioner.lstm_to_keras`` / ``lstm_from_keras`` give the mapping,
which cannot return the two biases PyTorch had)."""

from __future__ import annotations

from torch import nn

__all__ = ["LSTM"]

LSTM = nn.LSTM
