"""The harness can fail: planted bugs must be caught and the faulty submodule named."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from weight_convert.parity import run_case

SWIN = zoo.BLOCKS["SwinTransformerBlock"][1]  # 2D, shifted, 14x21
VITDET = zoo.BLOCKS["Block"][0]  # windowed with padding


def _set_eps(path: str):
    def plant(port):
        obj = port
        for part in path.split("."):
            obj = getattr(obj, part)
        obj.epsilon = 1e-3

    return plant


def _tanh_gelu(port):
    port.mlp.act.approximate = True


def _transpose(path: str, adapter):
    def plant(port):
        value = adapter.read(port)[path]
        assert value.shape[0] == value.shape[1], "plant needs a square kernel"
        adapter.assign(port, {path: np.ascontiguousarray(value.T)})

    return plant


@pytest.mark.parametrize("case", [SWIN, VITDET], ids=lambda c: c.name)
@pytest.mark.parametrize(
    "bug,expected",
    [("layernorm-eps-1e-3", "norm2"), ("tanh-gelu", "mlp.act"), ("transposed-kernel", "attn.proj")],
)
def test_planted_bug_is_caught_and_named(case, bug, expected, port):
    plant = {
        "layernorm-eps-1e-3": _set_eps("norm2"),
        "tanh-gelu": _tanh_gelu,
        "transposed-kernel": _transpose("attn.proj.kernel", port),
    }[bug]
    report = run_case(case, port, after_transfer=plant)
    assert not report.passed
    assert report.first_failure.path == expected, report.table()
    # Everything that runs before the faulty layer still matches.
    before = report.layers[: report.layers.index(report.first_failure)]
    assert before and all(not e.exceeded for e in before)
    assert "<-- first above tolerance" in report.table()


def test_same_case_passes_without_a_bug(port):
    assert run_case(SWIN, port).passed


def _stop_bias_gradient(port, monkeypatch) -> None:
    """The port's window attention reads its relative position bias table under a stop-gradient:
    the same numbers forward, no gradient to the table (a bug only the backward pass shows)."""
    if port.NAME == "flax":
        import jax

        from ports.flax.layers.window_attention import WindowAttention

        stop = jax.lax.stop_gradient
    else:
        import keras

        from ports.keras.layers.window_attention import WindowAttention

        stop = keras.ops.stop_gradient
    original = WindowAttention.relative_position_bias
    monkeypatch.setattr(
        WindowAttention, "relative_position_bias", lambda self, n: stop(original(self, n))
    )


def test_backward_only_bug_is_caught_and_named(port, monkeypatch):
    """A stop-gradient on the relative position bias table: the forward comparison passes, the
    gradient comparison fails and names the table."""
    _stop_bias_gradient(port, monkeypatch)
    assert run_case(SWIN, port).passed
    report = run_case(SWIN, port, gradients=True)
    assert not report.passed
    assert report.first_failure.path == "attn.relative_position_bias_table", report.table()
    failed = [e.path for e in [*report.layers, *report.outputs] if e.exceeded]
    assert failed == ["attn.relative_position_bias_table"], report.table()
