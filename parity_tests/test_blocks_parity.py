"""Every registered block case, every port, random weights: fp32 max abs error <= 1e-5 on the
output and on every aligned submodule, every reference submodule aligned with the port's."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from weight_convert.parity import BLOCK_GRAD_TOLERANCE, BLOCK_TOLERANCE, run_case
from weight_convert.tolerance import Tolerance

CASES = [case for _, cases in zoo.BLOCKS.items() for case in cases]
#: blocks with no submodules: only their output is compared
LEAVES = {"ConvTranspose2d", "DropPath", "LayerNorm2d"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_block_parity(case, port):
    report = run_case(case, port)
    assert report.passed, report.table()
    # The bound each tensor was held to is the block tolerance (1e-5), not a loosened one.
    assert BLOCK_TOLERANCE.atol == 1e-5 and BLOCK_TOLERANCE.rtol == 0
    assert {e.bound for e in [*report.layers, *report.outputs]} == {1e-5}, report.table()
    # Every reference submodule's output found its port counterpart, and was compared.
    assert not report.unmatched, report.table()
    assert report.group == case.block
    if case.block not in LEAVES:
        assert report.layers, report.table()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_block_gradients(case, port):
    """Backward parity: the gradient of one random projection of the outputs with respect to
    every parameter and every floating input, max abs error <= 1e-5 x (1 + max |gradient|)."""
    from weight_convert.frameworks import reference

    report = run_case(case, port, gradients=True)
    assert report.passed, report.table()
    assert BLOCK_GRAD_TOLERANCE == Tolerance(atol=1e-5, rmax=1e-5)
    module = reference.build(case.block, case.kwargs)
    assert [e.path for e in report.layers] == [n for n, _ in module.named_parameters()]
    made = [i.make(np.random.default_rng(0)) for i in case.inputs]
    assert len(report.outputs) == sum(np.issubdtype(x.dtype, np.floating) for x in made)


def test_every_block_has_three_shapes():
    for name, cases in zoo.BLOCKS.items():
        assert len({tuple(i.shape for i in c.inputs) for c in cases}) >= 3, name
