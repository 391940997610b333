"""The ports' exact GELU (``ports.*.layers.mlp.gelu``: PyTorch's formula, with PyTorch's
derivative written out for speed under JAX) against ``torch.nn.functional.gelu`` and its
autograd: values, first derivatives and, in Flax (a ``custom_jvp``, so forward mode and higher
orders work), second derivatives, at odd shapes with tails past +-6."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _inputs(dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 5)) * 3
    x.flat[:4] = [-9.0, -6.5, 6.5, 0.0]
    return x.astype(dtype)


def _torch(x: np.ndarray, order: int) -> list[np.ndarray]:
    t = torch.tensor(x, requires_grad=True)
    y = torch.nn.functional.gelu(t)
    (d1,) = torch.autograd.grad(y.sum(), t, create_graph=True)
    out = [y.detach().numpy(), d1.detach().numpy()]
    if order > 1:
        (d2,) = torch.autograd.grad(d1.sum(), t)
        out.append(d2.numpy())
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flax_gelu_matches_pytorch(dtype):
    jax = pytest.importorskip("jax")
    from ports.flax.layers.mlp import gelu

    x = _inputs(dtype)
    with jax.enable_x64(dtype == np.float64):
        xj = jax.numpy.asarray(x)
        d1 = jax.grad(lambda v: gelu(v).sum())
        got = [gelu(xj), d1(xj), jax.grad(lambda v: d1(v).sum())(xj)]
        # forward mode goes through the same rule
        _, tangent = jax.jvp(gelu, (xj,), (jax.numpy.ones_like(xj),))
        got = [np.asarray(g) for g in got]
        assert got[0].dtype == dtype
        np.testing.assert_array_equal(np.asarray(tangent), got[1])
    atol = 2e-6 if dtype == np.float32 else 1e-14
    for name, g, w in zip(
        ("value", "derivative", "second derivative"), got, _torch(x, 2), strict=True
    ):
        np.testing.assert_allclose(g, w, rtol=0, atol=atol, err_msg=name)


@pytest.mark.keras
def test_keras_gelu_matches_pytorch():
    keras = pytest.importorskip("keras")
    from ports.keras.layers.mlp import gelu

    x = _inputs(np.float32)
    value, grad = _keras_value_and_grad(keras, gelu, x)
    want = _torch(x, 1)
    np.testing.assert_allclose(value, want[0], rtol=0, atol=2e-6)
    np.testing.assert_allclose(grad, want[1], rtol=0, atol=2e-6)


def _keras_value_and_grad(keras, fn, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value, vjp = jax.vjp(fn, jax.numpy.asarray(x))
        return np.asarray(value), np.asarray(vjp(jax.numpy.ones_like(value))[0])
    if backend == "tensorflow":
        import tensorflow as tf

        v = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(v)
            y = fn(v)
        return y.numpy(), tape.gradient(y, v).numpy()
    t = torch.tensor(x, requires_grad=True)
    y = fn(t)
    (g,) = torch.autograd.grad(y.sum(), t)
    return y.detach().numpy(), g.numpy()
