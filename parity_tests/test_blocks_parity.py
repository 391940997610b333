"""Every registered block case, every port, random weights: fp32 max abs error <= 1e-5 on the
output and on every aligned submodule, every reference submodule aligned with the port's."""

from __future__ import annotations

import pytest

import zoo
from weight_convert.parity import BLOCK_TOLERANCE, run_case

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


def test_every_block_has_three_shapes():
    for name, cases in zoo.BLOCKS.items():
        assert len({tuple(i.shape for i in c.inputs) for c in cases}) >= 3, name
