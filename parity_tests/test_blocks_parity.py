"""Every registered block case, every port, random weights: fp32 max abs error <= 1e-5 on the
output and on every aligned submodule, every reference submodule aligned with the port's."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from weight_convert.parity import BLOCK_GRAD_TOLERANCE, BLOCK_TOLERANCE, run_case
from weight_convert.tolerance import Tolerance

CASES = [case for _, cases in zoo.BLOCKS.items() for case in cases]


def skip_without_float64(port) -> None:
    """Keras on JAX and torch cannot compute in float64: its dtype promotion turns a float64
    result into float32 on every backend but TensorFlow (``keras.backend.result_type``; see
    ``test_keras_float64_limit``)."""
    if port.NAME in ("keras-jax", "keras-torch"):
        pytest.skip(f"{port.NAME}: Keras promotes float64 to float32 on this backend")


#: blocks with no submodules: only their output is compared
LEAVES = {"BatchNorm2d", "ConvTranspose2d", "DropPath", "LayerNorm2d", "MaxPool2d"}


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


#: the gradient cases CI runs: every block at two or more shapes (odd sizes, padding, shifted
#: windows, batch > 1, 2D and 3D); the other cases run with -m slow (CI time)
GRADIENT_CI = {
    "Mlp[tokens]", "Mlp[map-b3]", "MLPBlock[tokens]", "MLPBlock[map]",
    "DropPath[tokens]", "DropPath[map]",
    "ConvTranspose2d[k2-odd-map-b2]", "ConvTranspose2d[k4-no-bias]",
    "LayerNorm2d[square-b2]", "LayerNorm2d[odd]",
    "BatchNorm2d[odd-b3-7x5-cumulative]", "BatchNorm2d[batch-stats-only]",
    "MaxPool2d[k3-s2-p1-b2-8x10]", "MaxPool2d[k2-odd-7x9]",
    "WindowAttention[2d-shift-mask]", "WindowAttention[2d-no-qkv-bias-scale]",
    "WindowAttention[3d-shift-mask]",
    "SwinTransformerBlock[2d-shift-pad-10x13]", "SwinTransformerBlock[2d-shift-smaller-5x6]",
    "SwinTransformerBlock[3d-shift-b2-5x9x7]", "SwinTransformerBlock[3d-shift-short-3x10x6]",
    "PatchEmbed[2d-pad-30x45]", "PatchEmbed[3d-pad-odd-t-b2]",
    "PatchMerging[2d-odd-7x9]", "PatchMerging[3d-odd-3x7x9]",
    "Attention[relpos-interp-9x7]", "Attention[relpos-shrink-4x5]",
    "Block[window-pad-b2]", "Block[global]",
    "ConditionalBatchNorm2d[b2-8x8]", "ConditionalBatchNorm2d[odd-b3-7x5-cumulative]",
}  # fmt: skip
GRADIENT_CASES = [
    pytest.param(c, id=c.name, marks=() if c.name in GRADIENT_CI else pytest.mark.slow)
    for c in CASES
]


@pytest.mark.parametrize("case", GRADIENT_CASES)
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


#: one case per block for float64 (exactness separates rounding from bugs; the shapes are
#: covered in float32)
FIRST_CASES = [cases[0] for _, cases in zoo.BLOCKS.items()]


@pytest.mark.parametrize("case", FIRST_CASES, ids=[c.name for c in FIRST_CASES])
def test_block_float64(case, port):
    """In float64 (reference, port, weights and inputs widened) forward and backward agree to
    1e-10 x max |reference| per tensor: a right port is exact up to float64 rounding."""
    from weight_convert.parity import FLOAT64_GRAD_TOLERANCE, FLOAT64_TOLERANCE

    skip_without_float64(port)
    forward = run_case(case, port, dtype="float64")
    assert forward.passed, forward.table()
    assert forward.settings["dtype"] == "float64" and FLOAT64_TOLERANCE.rmax == 1e-10
    backward = run_case(case, port, dtype="float64", gradients=True)
    assert backward.passed, backward.table()
    assert FLOAT64_GRAD_TOLERANCE == Tolerance(atol=0.0, rmax=1e-10, rscale=1e-12)


def test_gradient_cases_in_ci_cover_every_block():
    names = {c.name for c in CASES}
    assert GRADIENT_CI <= names, GRADIENT_CI - names
    for block in zoo.BLOCKS:
        assert sum(n.startswith(f"{block}[") for n in GRADIENT_CI) >= 2, block


def test_every_block_has_three_shapes():
    for name, cases in zoo.BLOCKS.items():
        assert len({tuple(i.shape for i in c.inputs) for c in cases}) >= 3, name


@pytest.mark.keras
def test_keras_float64_limit():
    """The reason float64 is skipped for Keras on JAX and torch, pinned: when a Keras release
    keeps float64 there, this fails and the skip goes."""
    import keras

    promoted = keras.backend.result_type("float64", "float64")
    if keras.backend.backend() == "tensorflow":
        assert promoted == "float64"
    else:
        assert promoted == "float32"
