"""The parity harness itself: formats inferred for undeclared reference modules, strict inputs,
the explicit recorder and the CLI table grouped by the report's group. (``run_config`` on every
registered family's tiny config: the shared suite, family_suite.py.)"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from weight_convert.frameworks import reference as ref_fw
from weight_convert.frameworks.recorder import Recorder
from weight_convert.parity import compare
from weight_convert.parity.cli import _table
from weight_convert.parity.formats import fitting_format
from zoo.tensor_format import Format

CF, CL = Format.CHANNELS_FIRST, Format.CHANNELS_LAST

# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "shape,port_shape,declared,expected",
    [
        ((2, 8, 5, 6), (2, 5, 6, 8), None, CF),  # fits only with the channel axis moved
        ((2, 5, 6, 8), (2, 5, 6, 8), None, CL),  # fits only as it is
        ((1, 8, 8, 8), (1, 8, 8, 8), None, CL),  # symmetric: both fit, the default stands
        ((2, 8, 5, 6), (2, 7, 7), None, CL),  # neither fits: the default (left unaligned)
        ((2, 8, 5, 6), None, None, CL),  # no port counterpart
        ((3, 4), (3, 4), None, CL),  # two axes: nothing to move
        ((2, 8, 5, 6), (2, 5, 6, 8), CL, CL),  # a declared format wins over the shapes
        ((2, 5, 6, 8), (2, 5, 6, 8), CF, CF),
    ],
)
def test_fitting_format(shape, port_shape, declared, expected):
    assert fitting_format(shape, port_shape, declared) is expected


def test_declared_formats_of_public_classes():
    class Declares(nn.Module):
        output_format = CL

    for module in (nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.GroupNorm(2, 4)):
        assert ref_fw.declared_format(module) is CF, module
    assert ref_fw.declared_format(nn.ReLU()) is None
    assert ref_fw.declared_format(nn.Sequential()) is None
    assert ref_fw.declared_format(Declares()) is CL
    assert ref_fw.output_format(nn.ReLU()) is CL


class _Double(nn.Module):
    """A new family's parameter-free module that declares nothing; channels-first in, out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x


class _Net(nn.Module):
    """conv -> ReLU -> max pool -> x 2, channels-first; only the conv and the pool are
    classes with a known format."""

    def __init__(self, twice: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.twice = twice or _Double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twice(self.pool(self.act(self.conv(x))))


def _keras_net():
    import keras

    class Double(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    class Net(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(8, 3, padding="same", name="conv")
            self.act = keras.layers.ReLU(name="act")
            self.pool = keras.layers.MaxPooling2D(2, name="pool")
            self.twice = Double(name="twice")

        def call(self, x):
            return self.twice(self.pool(self.act(self.conv(x))))

    return Net(name="root")


def _flax_net():
    import jax
    from flax import nnx

    class Act(nnx.Module):
        def __call__(self, x):
            return jax.nn.relu(x)

    class Pool(nnx.Module):
        def __call__(self, x):
            return nnx.max_pool(x, (2, 2), strides=(2, 2))

    class Double(nnx.Module):
        def __call__(self, x):
            return 2.0 * x

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.conv = nnx.Conv(3, 8, (3, 3), padding=1, rngs=rngs)
            self.act, self.pool, self.twice = Act(), Pool(), Double()

        def __call__(self, x):
            return self.twice(self.pool(self.act(self.conv(x))))

    return Net(nnx.Rngs(0))


def _port_net(port_name: str):
    return _keras_net() if port_name == "keras" else _flax_net()


def test_undeclared_modules_are_aligned_by_shape(port, port_name):
    """ReLU, the custom module and the root declare nothing: their channels-first outputs are
    compared with the port's channels-last ones because only that format fits."""
    reference = ref_fw.randomize_(_Net().eval())
    x = np.random.default_rng(0).standard_normal((2, 3, 10, 12), dtype=np.float32)
    report = compare(reference, _port_net(port_name), port, [x], [CF])
    assert report.passed, report.table()
    assert not report.unmatched, report.table()
    assert [e.path for e in report.layers] == ["conv", "act", "pool", "twice"]
    assert report.outputs[0].shape == (2, 5, 6, 8)


def test_declared_format_wins_over_the_shapes(port, port_name):
    class WronglyDeclared(_Double):
        output_format = CL

    reference = ref_fw.randomize_(_Net(WronglyDeclared()).eval())
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6), dtype=np.float32)
    report = compare(reference, _port_net(port_name), port, [x], [CF])
    assert report.unmatched == ["twice"], report.table()


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("n_formats", [1, 3])
def test_compare_refuses_inputs_and_formats_of_different_counts(n_formats):
    inputs = [np.zeros((1, 3, 4, 4), np.float32)] * 2
    with pytest.raises(ValueError, match=f"2 inputs but {n_formats} formats"):
        compare(None, None, None, inputs, [CF] * n_formats, name="case")


# --------------------------------------------------------------------------- recorder


def test_recorder_keeps_records_only_while_running():
    recorder = Recorder()
    recorder.add("a", np.zeros(1))
    assert recorder.records == []
    with recorder.running():
        recorder.add("a", np.zeros(1))
        recorder.add("b", np.ones(2))
        with pytest.raises(RuntimeError):
            with recorder.running():
                pass
    assert [p for p, _ in recorder] == ["a", "b"]
    paths, values = recorder.take_since(1)
    assert paths == ["b"] and recorder.records[0][0] == "a"
    recorder.put(paths, values)
    assert [p for p, _ in recorder] == ["a", "b"]


@pytest.mark.parametrize("which", ["reference", "port"])
def test_capture_records_only_the_call_given_the_recorder(which, port, port_name):
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6), dtype=np.float32)
    if which == "reference":
        adapter, module, inputs = ref_fw, _Net().eval(), [x]
    else:
        adapter, module, inputs = port, _port_net(port_name), [np.moveaxis(x, 1, -1)]
        port.materialize(module, inputs)
    with adapter.capture(module) as recorder:
        adapter.call(module, inputs)  # no recorder: nothing recorded
        assert recorder.records == []
        out = adapter.call(module, inputs, recorder=recorder)
    assert [p for p, _ in recorder] == ["conv", "act", "pool", "twice"]
    assert all(isinstance(v, np.ndarray) for _, v in recorder)
    np.testing.assert_array_equal(recorder.records[-1][1], out)
    assert not hasattr(adapter, "_recording")  # no module-level recording state


# --------------------------------------------------------------------------- CLI table


def test_cli_table_groups_by_the_report_group():
    def report(name, group, max_abs, passed=True):
        return {"name": name, "group": group, "max_abs": max_abs, "passed": passed}

    reports = [report("any-name", "Mlp", 1e-7), report("x[Mlp]", "Block", 3e-6, passed=False)]
    table, ok = _table([{"target": "flax", "reports": reports}], ["Mlp", "Block"])
    rows = table.splitlines()
    assert rows[1].split()[:2] == ["Mlp", "1.00e-07"]
    assert rows[2].split() == ["Block", "3.00e-06", "!!"]
    assert not ok


# --------------------------------------------------------------------------- compat fallbacks


@pytest.mark.keras
def test_keras_sublayer_paths_and_deferred_values_without_internals():
    """The public fallbacks of ``zoo.compat``: the attribute walk finds the same sublayer paths,
    and a port built with ``initialize=False`` then assigned runs the same."""
    from weight_convert.frameworks import keras_port
    from zoo import compat

    x = np.random.default_rng(0).standard_normal((1, 6, 6, 3), dtype=np.float32)
    results = []
    for fallback in (False, True):
        with compat.forced_fallbacks() if fallback else contextlib.nullcontext():
            net = _keras_net()
            keras_port.materialize(net, [x], initialize=False)
            values = {p: np.full(s, 0.1, np.float32) for p, s in keras_port.shapes(net).items()}
            keras_port.assign(net, values)
            paths = [p for p, _ in compat.keras_sublayers(net)]
            results.append((paths, keras_port.call(net, [x])))
    assert results[0][0] == results[1][0] == ["conv", "act", "pool", "twice"]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_cli_float64_runs_where_keras_computes_float64(capsys):
    """``weight-convert parity --float64`` skips Keras on JAX / torch (they compute float64 in
    float32) and refuses a selection of those targets alone, in one line, exit code 2."""
    from weight_convert.cli import main

    assert main(["parity", "--float64", "--targets", "keras-jax", "keras-torch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["weight-convert: error: --float64 runs on keras-tensorflow and flax only"]
