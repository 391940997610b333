"""ConditionalBatchNorm2d (``zoo.layers.norm``) in the ports as the reference behaves, in
training mode too: eval-mode parity of every case is test_blocks_parity.py (random running
statistics, random affine and conditional weights). Here: training-mode outputs and gradients,
the running statistics after steps on batches of different sizes (PyTorch's momentum, the
unbiased variance into ``running_var``, ``num_batches_tracked``), and the planted bugs each
check catches (Keras's momentum convention, the biased variance, Keras's eps)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import zoo
from weight_convert import transfer
from weight_convert.frameworks import reference as ref_fw
from weight_convert.parity import BLOCK_TOLERANCE, run_case
from weight_convert.parity.comparison import load_reference_weights
from zoo.tensor_format import Format, to_port_format

CASES = zoo.BLOCKS["ConditionalBatchNorm2d"]
#: the running statistics after the steps: max abs error <= 1e-6 x max |PyTorch's|
STAT_RTOL = 1e-6
#: (B, H, W) of the steps: 105, 18 and 24 values per channel (the unbiased factor differs)
STEP_SHAPES = ((3, 7, 5), (2, 1, 9), (1, 4, 6))
STATS = ("bn.running_mean", "bn.running_var")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_training_mode_parity(case, port):
    """Training mode (batch statistics, the biased variance): outputs within 1e-5."""
    report = run_case(case, port, training=True)
    assert report.passed, report.table()
    assert report.settings["mode"] == "training" and BLOCK_TOLERANCE.atol == 1e-5


def test_training_mode_gradients(port):
    """Backward through the batch statistics and the conditional scale and shift: every
    parameter's and both inputs' gradients within the block bound."""
    report = run_case(CASES[0], port, training=True, gradients=True)
    assert report.passed, report.table()
    assert [e.path for e in report.layers] == [
        "weight",
        "bias",
        "gamma_c.weight",
        "gamma_c.bias",
        "beta_c.weight",
        "beta_c.bias",
    ]
    assert len(report.outputs) == 2  # x and c


def _setup(port, kwargs, seed=0):
    reference = ref_fw.randomize_(ref_fw.build("ConditionalBatchNorm2d", kwargs), seed)
    module = port.build("ConditionalBatchNorm2d", kwargs, initialize=False)
    x = np.zeros((2, 3, 3, kwargs["num_features"]), np.float32)
    c = np.zeros((2, kwargs["cond_dim"]), np.float32)
    load_reference_weights(port, module, reference, [x, c])
    return reference, module


def _batches(kwargs, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [
        (
            (1.5 * rng.standard_normal((b, kwargs["num_features"], h, w)) + 0.7).astype(np.float32),
            rng.standard_normal((b, kwargs["cond_dim"])).astype(np.float32),
        )
        for b, h, w in STEP_SHAPES
    ]


def _steps(port, kwargs, plant=None) -> tuple[dict[str, float], int, int]:
    """Three training steps in both; the running statistics' relative errors and the two
    counters."""
    reference, module = _setup(port, kwargs)
    if plant is not None:
        plant(module)
    for x, c in _batches(kwargs):
        ref_fw.call(reference, [x, c], training=True)
        port.call(module, [to_port_format(x, Format.CHANNELS_FIRST), c], training=True)
    want = ref_fw.state_dict(reference)
    got = transfer.to_torch(port.read(module))
    errors = {k: float(np.max(np.abs(got[k] - want[k])) / np.max(np.abs(want[k]))) for k in STATS}
    counter = got["bn.num_batches_tracked"]
    assert counter.dtype == np.int64
    return errors, int(counter), int(want["bn.num_batches_tracked"])


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum-0.1", "cumulative"])
def test_running_statistics(momentum, port):
    """Three training steps on batches of different sizes: ``bn.running_mean`` /
    ``bn.running_var`` within 1e-6 x max |PyTorch's|, ``num_batches_tracked`` equal."""
    errors, count, want = _steps(port, dict(num_features=8, cond_dim=5, momentum=momentum))
    assert all(e <= STAT_RTOL for e in errors.values()), errors
    assert count == want


#: bug -> (what it plants, the statistics it must break)
BUGS = {
    "biased-variance": ("unbiased_variance", {"bn.running_var"}),
    "keras-momentum-0.9": ("momentum", {"bn.running_mean", "bn.running_var"}),
}


@pytest.mark.parametrize("bug", list(BUGS))
def test_running_statistics_planted_bugs(bug, port, monkeypatch):
    """The biased batch variance into running_var (Keras's and nnx's habit), or momentum 0.9
    (Keras's convention, ``1 - 0.1``, read in PyTorch's sense): the statistics it touches leave
    the bound, the others stay within it."""
    attribute, broken = BUGS[bug]
    if attribute == "unbiased_variance":
        norm = importlib.import_module(f"ports.{port.NAME.split('-')[0]}.layers.norm")
        monkeypatch.setattr(norm, "unbiased_variance", lambda var, n: var)
        plant = None
    else:

        def plant(module):
            module.bn.momentum = 0.9

    errors, _, _ = _steps(port, dict(num_features=8, cond_dim=5), plant)
    assert {k for k, e in errors.items() if e > STAT_RTOL} == broken, errors


def test_planted_eps_fails_eval_parity(port):
    """eps 1e-3 (Keras's default) in the port's ``bn``: eval-mode parity fails, naming ``bn``
    first."""

    def plant(module) -> None:
        module.bn.eps = 1e-3

    report = run_case(CASES[0], port, after_transfer=plant)
    assert not report.passed
    assert report.first_failure.path == "bn", report.table()
