"""Every registered block case, every port, random weights: fp32 max abs error <= 1e-5."""

from __future__ import annotations

import pytest

import zoo
from weight_convert.parity import run_case

CASES = [case for _, cases in zoo.BLOCKS.items() for case in cases]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_block_parity(case, port):
    report = run_case(case, port)
    assert report.passed, report.table()
    assert report.max_abs <= 1e-5
    # Aligned submodules were compared too, not only the output.
    if case.block not in {"ConvTranspose2d", "DropPath", "LayerNorm2d"}:  # leaves
        assert report.layers, report.table()


def test_every_block_has_three_shapes():
    for name, cases in zoo.BLOCKS.items():
        assert len({tuple(i.shape for i in c.inputs) for c in cases}) >= 3, name
