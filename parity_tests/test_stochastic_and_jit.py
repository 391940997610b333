"""DropPath (identity at inference, per-sample in training) and jit-compiled ports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stochastic import check_per_sample

import zoo
import zoo.layers as ref
from weight_convert.frameworks import reference as ref_fw
from weight_convert.parity import load_reference_weights


def _drop_path_train(port_name, drop_prob, x):
    if port_name == "keras":
        import keras

        from ports.keras.layers import DropPath

        layer = DropPath(drop_prob, name="dp")
        return [keras.ops.convert_to_numpy(layer(x, training=True)) for _ in range(2)]
    from flax import nnx

    from ports.flax.layers import DropPath

    module = DropPath(drop_prob, rngs=nnx.Rngs(0))
    module.train()
    return [np.asarray(module(x)) for _ in range(2)]


@pytest.mark.parametrize("drop_prob", [0.25, 0.5])
def test_drop_path_is_per_sample_in_training(drop_prob, port_name):
    x = np.random.default_rng(0).standard_normal((400, 3, 5), dtype=np.float32) + 5.0
    keep = 1.0 - drop_prob
    first, second = _drop_path_train(port_name, drop_prob, x)
    check_per_sample(first, x, keep)
    assert not np.array_equal(first, second)  # a new draw per call


def test_reference_drop_path_per_sample():
    x = torch.randn(400, 3, 5) + 5.0
    module = ref.DropPath(0.5).train()
    check_per_sample(module(x).numpy(), x.numpy(), 0.5)
    torch.testing.assert_close(module.eval()(x), x, rtol=0, atol=0)


JIT_CASES = [
    zoo.BLOCKS["SwinTransformerBlock"][2],
    zoo.BLOCKS["SwinTransformerBlock"][7],
    zoo.BLOCKS["Block"][0],
    zoo.BLOCKS["PatchEmbed"][4],
]


def _jit_call(port_name, module, x):
    if port_name == "flax":
        from flax import nnx

        return np.asarray(nnx.jit(lambda m, v: m(v))(module, x))
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        fn = jax.jit(lambda tv, ntv, v: module.stateless_call(tv, ntv, v)[0])
        return np.asarray(
            fn(
                [v.value for v in module.trainable_variables],
                [v.value for v in module.non_trainable_variables],
                x,
            )
        )
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(module.call, jit_compile=True)(tf.constant(x)).numpy()
    pytest.skip("no jit path exercised for the torch backend (torch.compile is slow on CPU)")


@pytest.mark.parametrize("case", JIT_CASES, ids=lambda c: c.name)
def test_ports_jit_match_reference(case, port, port_name):
    reference = ref_fw.randomize_(ref_fw.build(case.block, case.kwargs))
    module = port.build(case.block, case.kwargs)
    x = case.inputs[0].make(np.random.default_rng(0))
    xp = zoo.tensor_format.to_port_format(x, case.inputs[0].format)
    load_reference_weights(port, module, reference, [xp])
    expected = zoo.tensor_format.to_port_format(
        ref_fw.call(reference, [x]), ref_fw.output_format(reference)
    )
    got = _jit_call(port_name, module, xp)
    assert np.max(np.abs(got - expected)) <= 1e-5
