"""Structural transfer: strict coverage both ways, layout rules, bit-identical round trips."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from weight_convert import rules, transfer
from weight_convert.frameworks import reference as ref_fw
from weight_convert.parity import load_reference_weights

FIRST_CASES = [cases[0] for _, cases in zoo.BLOCKS.items()]


@pytest.mark.parametrize("ndim", [2, 3, 4, 5])
def test_kernel_rule_round_trip(ndim, rng):
    w = rng.standard_normal(tuple(range(2, 2 + ndim)), dtype=np.float32)
    k = rules.port_tensor("proj.kernel", w)
    assert k.shape == tuple(w.shape[2:]) + (w.shape[1], w.shape[0])
    np.testing.assert_array_equal(rules.torch_tensor("proj.kernel", k), w)


def test_leaf_names():
    assert rules.torch_key("blocks.0.attn.qkv.kernel") == "blocks.0.attn.qkv.weight"
    assert rules.torch_key("norm1.gamma") == "norm1.weight"
    assert rules.torch_key("norm1.scale") == "norm1.weight"
    assert rules.torch_key("norm1.beta") == "norm1.bias"
    assert rules.torch_key("attn.rel_pos_h") == "attn.rel_pos_h"


def test_coverage_lists_both_sides():
    port = {"a.kernel": (2, 3), "a.bias": (3,), "b.gamma": (3,)}
    sd = {
        "a.weight": np.zeros((3, 2), np.float32),
        "a.bias": np.zeros(3, np.float32),
        "extra.weight": np.zeros(1, np.float32),
    }
    with pytest.raises(transfer.CoverageError) as err:
        transfer.to_port(sd, port)
    assert err.value.unused == ["extra.weight"]
    assert err.value.unset == ["b.gamma (from b.weight)"]
    assert "1 unused source key(s): extra.weight" in str(err.value)
    assert "1 unset target variable(s): b.gamma (from b.weight)" in str(err.value)
    out = transfer.to_port(sd, port, allow_missing=["b.*"], allow_unused=["extra.*"])
    assert set(out) == {"a.kernel", "a.bias"}


def test_shape_mismatch_is_named():
    with pytest.raises(transfer.ShapeMismatchError, match="a.weight: shape"):
        transfer.to_port({"a.weight": np.zeros((4, 2), np.float32)}, {"a.kernel": (2, 3)})


def test_derived_buffers_never_in_state_dict():
    attn = ref_fw.build("WindowAttention", dict(dim=8, window_size=(3, 3), num_heads=2))
    assert "relative_position_index" not in attn.state_dict()
    assert hasattr(attn, "relative_position_index")


@pytest.mark.parametrize("case", FIRST_CASES, ids=lambda c: c.block)
def test_round_trip_is_bit_identical(case, port):
    reference = ref_fw.randomize_(ref_fw.build(case.block, case.kwargs), seed=3)
    sd = ref_fw.state_dict(reference)
    for name, value in sd.items():  # every parameter randomized: no zero or constant tables
        assert value.size < 2 or np.std(value) > 0, name
    module = port.build(case.block, case.kwargs)
    rng = np.random.default_rng(0)
    inputs = [zoo.tensor_format.to_port_format(i.make(rng), i.format) for i in case.inputs]
    load_reference_weights(port, module, reference, inputs)
    back = transfer.to_torch(port.read(module))
    assert set(back) == set(sd)
    for key in sd:
        assert back[key].dtype == sd[key].dtype
        np.testing.assert_array_equal(back[key], sd[key], err_msg=key)
    # And it loads into a fresh reference, strictly.
    ref_fw.load_state_dict(ref_fw.build(case.block, case.kwargs), back)
