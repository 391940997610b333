"""Mixed precision (bfloat16 compute, float32 parameters and inputs) against the float32
reference: Keras' ``mixed_bfloat16`` policy on each backend, Flax layers with
``dtype=bfloat16``, and the reference under ``torch.autocast`` as the baseline of what bfloat16
costs in PyTorch itself. One case per block in CI; every family's tiny config is ``slow``.

Bounds (``weight_convert.tolerance``, measured in the README's "Mixed precision" table): every
compared tensor's max abs error <= 5e-2 x its max |reference|; block gradients <= 5e-2 x max
|reference gradient| + 1e-2 x the block's largest gradient; whole-model gradients relative to the
model's largest gradient (0.25 x it). Each run must also be really bfloat16: its output is
bfloat16, or its error is far above float32 rounding.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import zoo
from weight_convert.frameworks import reference
from weight_convert.parity import (
    MIXED_BFLOAT16,
    MIXED_BFLOAT16_GRAD_TOLERANCE,
    MIXED_BFLOAT16_TOLERANCE,
    run_case,
    run_config,
)
from weight_convert.tolerance import Tolerance
from zoo.registry import FAMILIES

#: DropPath is the identity at inference: nothing is computed, in bfloat16 or not
BLOCKS = [cases[0] for name, cases in zoo.BLOCKS.items() if name != "DropPath"]
#: the Swin block (attention, MLP, norms, shift mask, residuals): what CI runs (each block
#: compiles in Flax and Keras on JAX, 3-14 s on 2 cores); every block runs with -m slow
COMPOSITE = {"SwinTransformerBlock"}


def _ci(case, keep: bool):
    return pytest.param(case, id=case.block, marks=() if keep else pytest.mark.slow)


#: float32 rounding of these blocks is ~1e-7 relative; bfloat16 (8-bit mantissa) ~1e-3
ABOVE_FLOAT32 = 3e-4


def _assert_bfloat16(forward, backward) -> None:
    """The run computed in bfloat16: the output is bfloat16, and both errors are far above
    float32 rounding."""
    worst = max(e.max_rel for e in forward.outputs)
    assert worst > ABOVE_FLOAT32, f"forward error {worst:.1e}: not bfloat16?\n{forward.table()}"
    grad = max(e.max_rel for e in [*backward.layers, *backward.outputs])
    assert grad > ABOVE_FLOAT32, f"gradient error {grad:.1e}: not bfloat16?\n{backward.table()}"


def _check_block(case, port) -> None:
    """``case`` computing in bfloat16 is within the mixed-precision bounds of the float32
    reference, every layer and every gradient, and really ran in bfloat16."""
    forward = run_case(case, port, dtype=MIXED_BFLOAT16)
    assert forward.passed, forward.table()
    # Keras casts every layer's output to the compute dtype; in Flax (as under torch.autocast)
    # a residual block adds its float32 input back, which promotes its output to float32
    residual = port.NAME == "flax" and case.block in ("SwinTransformerBlock", "Block")
    want = "float32" if residual else "bfloat16"
    # Keras on JAX runs compiled through stateless_call, whose variable values are not autocast:
    # a layer reading its own float32 variable (ConvTranspose2d's kernel, ViTDet's rel-pos
    # tables) promotes to float32 there; the error check below still proves bfloat16 ran
    if port.NAME != "keras-jax":
        assert forward.settings["port output dtype"] == want, forward.settings
    backward = run_case(case, port, dtype=MIXED_BFLOAT16, gradients=True)
    assert backward.passed, backward.table()
    _assert_bfloat16(forward, backward)
    assert MIXED_BFLOAT16_TOLERANCE == Tolerance(atol=0.0, rmax=5e-2)
    assert MIXED_BFLOAT16_GRAD_TOLERANCE == Tolerance(atol=0.0, rmax=5e-2, rscale=1e-2)


#: Keras runs the Swin block in CI on TensorFlow; on JAX and torch with -m slow (CI time)
_KERAS_TF = os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"


@pytest.mark.keras
@pytest.mark.parametrize("case", [_ci(c, c.block in COMPOSITE and _KERAS_TF) for c in BLOCKS])
def test_block_keras_mixed_bfloat16(case):
    """Every block (one case) under Keras' ``mixed_bfloat16`` policy, on each backend."""
    from weight_convert.frameworks import port

    adapter = port("keras")
    if adapter.NAME == "keras-jax" and case.block == "ConvTranspose2d":
        pytest.skip(
            "keras-jax: ConvTranspose2d runs in float32 under mixed_bfloat16 (exactly the float32 "
            "result: through stateless_call neither its input nor its variables are autocast)"
        )
    _check_block(case, adapter)


@pytest.mark.parametrize("case", [_ci(c, c.block in COMPOSITE) for c in BLOCKS])
def test_block_flax_mixed_bfloat16(case):
    """Every block (one case) with its Flax layers computing in bfloat16."""
    from weight_convert.frameworks import port

    _check_block(case, port("flax"))


#: blocks whose every op stays float32 under torch.autocast (hand-written mean / variance;
#: batch_norm is on no autocast list of the CPU)
AUTOCAST_FLOAT32 = {"BatchNorm2d", "LayerNorm2d"}


@pytest.mark.parametrize("case", [_ci(c, c.block in COMPOSITE) for c in BLOCKS])
def test_block_autocast_baseline(case):
    """The reference under ``torch.autocast`` against itself in float32 holds to the same
    bounds: the ports cost what bfloat16 costs in PyTorch."""
    if case.block in AUTOCAST_FLOAT32:
        pytest.skip(f"{case.block}: no op autocast lowers (its float32 result is exact)")
    forward = run_case(case, reference, dtype=MIXED_BFLOAT16)
    backward = run_case(case, reference, dtype=MIXED_BFLOAT16, gradients=True)
    assert forward.passed, forward.table()
    assert backward.passed, backward.table()
    _assert_bfloat16(forward, backward)


def _transpose(port, path):
    def plant(module) -> None:
        value = np.asarray(port.read(module)[path], dtype=np.float32)
        port.assign(module, {path: value.T.copy()})

    return plant


def _set(attribute, value):
    def plant(module) -> None:
        node = module
        for name in attribute[:-1]:
            node = getattr(node, name)
        setattr(node, attribute[-1], value)

    return plant


def test_planted_bugs_mixed_bfloat16():
    """What bfloat16 parity can and cannot catch (Flax ports, bugs planted after the transfer):
    a transposed (square) kernel is caught and named; a tanh-approximated GELU (~1e-3 relative)
    and LayerNorm's eps at Keras' default 1e-3 instead of 1e-5 (~1e-3 relative on unit-variance
    activations) are below bfloat16's noise and pass: the float32 tests catch those."""
    from weight_convert.frameworks import port as get_port

    flax = get_port("flax")
    attention = zoo.BLOCKS["WindowAttention"][0]
    plant = _transpose(flax, "proj.kernel")
    report = run_case(attention, flax, dtype=MIXED_BFLOAT16, after_transfer=plant)
    assert not report.passed and report.first_failure.path == "proj", report.table()
    mlp, merging = zoo.BLOCKS["Mlp"][0], zoo.BLOCKS["PatchMerging"][0]
    for case, plant in [
        (mlp, _set(("act", "approximate"), True)),
        (merging, _set(("norm", "epsilon"), 1e-3)),
    ]:
        assert run_case(case, flax, after_transfer=plant).first_failure is not None
        report = run_case(case, flax, dtype=MIXED_BFLOAT16, after_transfer=plant)
        assert report.passed, report.table()


FAMILY_NAMES = sorted(FAMILIES)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_model_mixed_bfloat16(family, port):
    """Every family's tiny config computing in bfloat16: every layer within 5e-2 x its max
    |reference|, every gradient within the whole-model bound."""
    config = FAMILIES[family].tiny
    forward = run_config(config, port, dtype=MIXED_BFLOAT16)
    assert forward.passed, forward.table()
    backward = run_config(config, port, dtype=MIXED_BFLOAT16, gradients=True)
    assert backward.passed, backward.table()
    _assert_bfloat16(forward, backward)
