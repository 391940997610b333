"""Optimizer steps equal across frameworks: from the same weights and inputs, 10 steps of SGD
(momentum, weight decay), AdamW and Adadelta built from one ``zoo.training`` spec in
``torch.optim``, Keras (``ports.keras.training``, each backend) and optax (``nnx.Optimizer``)
move every parameter by the same amount after every step (1 to 10); the defaults and formulas
that differ between the libraries are pinned."""

from __future__ import annotations

import numpy as np
import pytest
from test_blocks_parity import skip_without_float64

import zoo
from weight_convert.parity import run_case
from weight_convert.tolerance import (
    OPTIMIZER_ADAPTIVE_TOLERANCE,
    OPTIMIZER_FLOAT64_TOLERANCE,
    OPTIMIZER_SGD_TOLERANCE,
    Tolerance,
)
from zoo import training

#: a block whose gradients have no exact zeros (an attention's key bias has: Adam turns its
#: rounding noise into full steps, see ``OPTIMIZER_ADAPTIVE_TOLERANCE``); cheap everywhere
CASE = zoo.BLOCKS["Mlp"][0]
STEPS = 10

#: float32: PyTorch's usual values (AdamW at torch's defaults; Adadelta as the ConvNet trains)
FLOAT32 = {
    "SGD": training.SGD(lr=1e-4, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "AdamW": training.AdamW(lr=1e-3),
    "Adadelta": training.Adadelta(lr=0.5, weight_decay=1e-2),
}
#: float64: every hyperparameter exact in float32 (binary fractions): Keras on TensorFlow
#: rounds a Python-float hyperparameter to float32 even for float64 variables
#: (``ops.cast(self.momentum, variable.dtype)``: ``test_keras_float32_hyperparameters``), which
#: would hide the exactness this proves
FLOAT64 = {
    "SGD": training.SGD(lr=2**-13, momentum=0.875, weight_decay=2**-5),
    "AdamW": training.AdamW(lr=2**-10, betas=(0.875, 1 - 2**-10), eps=2**-27, weight_decay=2**-7),
    "Adadelta": training.Adadelta(lr=0.5, rho=0.875, eps=2**-20, weight_decay=2**-5),
}


def _check_rows(report) -> None:
    """One row per parameter and step, steps 1 to STEPS, the last step's as the outputs."""
    rows = [*report.layers, *report.outputs]
    per_step = len(report.outputs)
    assert per_step and len(rows) == per_step * STEPS
    assert all(e.path.endswith(f"@ step {STEPS}") for e in report.outputs)
    assert rows[0].path.endswith("@ step 1")


@pytest.mark.parametrize("kind", list(FLOAT32))
def test_optimizer_steps(kind, port):
    """float32: every parameter's movement after each of 10 steps within 1e-4 (SGD) or 1e-3
    (AdamW, Adadelta) of the reference's largest movement of that tensor."""
    report = run_case(CASE, port, optimizer=FLOAT32[kind], steps=STEPS)
    assert report.passed, report.table()
    _check_rows(report)
    assert OPTIMIZER_SGD_TOLERANCE == Tolerance(atol=0.0, rmax=1e-4)
    assert OPTIMIZER_ADAPTIVE_TOLERANCE == Tolerance(atol=0.0, rmax=1e-3)


@pytest.mark.parametrize("kind", list(FLOAT64))
def test_optimizer_steps_float64(kind, port):
    """float64: the movements agree to 1e-10 of the reference's: the recipe maps every
    hyperparameter (a wrong epsilon placement, a coupled decay where it is decoupled or a
    momentum dampening shows here, far below the float32 bounds)."""
    skip_without_float64(port)
    report = run_case(CASE, port, optimizer=FLOAT64[kind], steps=STEPS, dtype="float64")
    assert report.passed, report.table()
    assert report.settings["dtype"] == "float64"
    assert OPTIMIZER_FLOAT64_TOLERANCE == Tolerance(atol=0.0, rmax=1e-10)
    _check_rows(report)


# ------------------------------------------------------------------ formulas and defaults pinned
# One tensor, a fixed sequence of gradients (no model): each library's optimizer against a NumPy
# transcription of the formula it documents, in float32.

#: gradients of the size of Adam's epsilon, where its placement decides the step
TINY = 1e-8


def _gradients(scale: float, start_scale: float = 1.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A start tensor ~ N(0, start_scale^2) and STEPS gradients ~ N(0, scale^2), float32."""
    rng = np.random.default_rng(0)
    start = (start_scale * rng.standard_normal(64)).astype(np.float32)
    return start, [(scale * rng.standard_normal(64)).astype(np.float32) for _ in range(STEPS)]


def _numpy_adamw(spec, start, grads, *, keras_epsilon: bool) -> np.ndarray:
    """AdamW in float64: torch's formula, or (``keras_epsilon``) Keras's, which adds epsilon
    to sqrt(v) before the bias correction."""
    (b1, b2), p = spec.betas, start.astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p = p - spec.lr * spec.weight_decay * p
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g.astype(np.float64) ** 2
        c1, c2 = 1 - b1**t, 1 - b2**t
        if keras_epsilon:
            p = p - spec.lr * np.sqrt(c2) / c1 * m / (np.sqrt(v) + spec.eps)
        else:
            p = p - spec.lr / c1 * m / (np.sqrt(v) / np.sqrt(c2) + spec.eps)
    return p


def _numpy_sgd(spec, start, grads, *, coupled: bool) -> np.ndarray:
    """SGD with momentum in float64: torch's coupled weight decay, or Keras's decoupled one."""
    p, b = start.astype(np.float64), None
    for g in grads:
        g = g + spec.weight_decay * p if coupled else g.astype(np.float64)
        if not coupled:
            p = p - spec.lr * spec.weight_decay * p
        b = g if b is None else spec.momentum * b + g
        p = p - spec.lr * b
    return p


def _torch_steps(spec, start, grads) -> np.ndarray:
    import torch

    param = torch.nn.Parameter(torch.from_numpy(start.copy()))
    optimizer = training.torch_optimizer(spec, [param])
    for g in grads:
        param.grad = torch.from_numpy(g)
        optimizer.step()
    return param.detach().numpy()


def _keras_steps(optimizer, start, grads) -> np.ndarray:
    import keras

    variable = keras.Variable(start.copy(), dtype="float32")
    for g in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
    return keras.ops.convert_to_numpy(variable.value)


def _relative(got: np.ndarray, want: np.ndarray, start: np.ndarray) -> float:
    """max |got - want| / max |want - start|: the error relative to the movement."""
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want - start)))


@pytest.mark.keras
def test_keras_adamw_epsilon_placement():
    """Keras's ``AdamW`` adds epsilon to sqrt(v) before the bias correction (torch's formula
    with epsilon x sqrt(1 - beta_2^t)), so with gradients of epsilon's size it is far from
    torch's even with every argument mapped; ``ports.keras.training.AdamW`` is torch's. When
    Keras changes its formula, the first assertion fails and the subclass can go."""
    import keras

    from ports.keras.training import keras_optimizer

    spec = training.AdamW(lr=1e-3, eps=TINY)
    start, grads = _gradients(TINY, start_scale=1e-3)  # movements ~ the weights: no fp32 cover
    torch_result = _torch_steps(spec, start, grads)
    builtin = keras.optimizers.AdamW(
        learning_rate=spec.lr,
        weight_decay=spec.weight_decay,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=spec.eps,
    )
    keras_formula = _numpy_adamw(spec, start, grads, keras_epsilon=True)
    torch_formula = _numpy_adamw(spec, start, grads, keras_epsilon=False)
    assert _relative(_keras_steps(builtin, start, grads), keras_formula, start) < 1e-4
    assert _relative(torch_result, torch_formula, start) < 1e-4
    assert _relative(keras_formula, torch_formula, start) > 0.1
    ours = _keras_steps(keras_optimizer(spec), start, grads)
    assert _relative(ours, torch_result, start) < 1e-4


@pytest.mark.keras
def test_keras_weight_decay_and_defaults():
    """Keras's ``weight_decay`` is decoupled (the variable shrinks outside the momentum), torch
    SGD's and Adadelta's coupled (L2 in the gradient): the built-in with the same number is not
    torch's update, ``SGDL2`` is. The defaults that differ from torch's, pinned."""
    import keras

    from ports.keras.training import SGDL2, AdadeltaL2, keras_optimizer

    spec = training.SGD(lr=0.1, momentum=0.9, weight_decay=0.1)
    start, grads = _gradients(1.0)
    torch_result = _torch_steps(spec, start, grads)
    assert _relative(torch_result, _numpy_sgd(spec, start, grads, coupled=True), start) < 1e-5
    builtin = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=0.1)
    decoupled = _numpy_sgd(spec, start, grads, coupled=False)
    assert _relative(_keras_steps(builtin, start, grads), decoupled, start) < 1e-5
    assert _relative(decoupled, torch_result, start) > 0.05
    ours = keras_optimizer(spec)
    assert isinstance(ours, SGDL2)
    assert _relative(_keras_steps(ours, start, grads), torch_result, start) < 1e-5
    assert isinstance(keras_optimizer(training.Adadelta(weight_decay=0.1)), AdadeltaL2)
    builtin_adadelta = keras_optimizer(training.Adadelta())  # torch backend: its own subclass
    assert isinstance(builtin_adadelta, keras.optimizers.Adadelta)
    assert not isinstance(builtin_adadelta, AdadeltaL2)

    defaults = {
        keras.optimizers.AdamW: {"weight_decay": 0.004, "epsilon": 1e-7},
        keras.optimizers.Adadelta: {"rho": 0.95, "epsilon": 1e-7},
        keras.optimizers.SGD: {"weight_decay": None},
    }
    for cls, values in defaults.items():
        optimizer = cls()
        assert {k: getattr(optimizer, k) for k in values} == values, cls
    assert float(keras.optimizers.Adadelta().learning_rate) == pytest.approx(1e-3)
    assert float(keras.optimizers.SGD().learning_rate) == pytest.approx(1e-2)
    torch_defaults = training.AdamW(), training.Adadelta()
    assert (torch_defaults[0].weight_decay, torch_defaults[0].eps) == (1e-2, 1e-8)
    assert (torch_defaults[1].lr, torch_defaults[1].rho, torch_defaults[1].eps) == (1.0, 0.9, 1e-6)


@pytest.mark.keras
def test_keras_float32_hyperparameters():
    """Why the float64 specs use binary fractions: Keras's built-in optimizers cast their
    Python-float hyperparameters with ``ops.cast``, which goes through float32 on TensorFlow
    (and on JAX without 64-bit mode); 0.875 survives it, 0.9 does not."""
    import keras

    rounded = float(keras.ops.convert_to_numpy(keras.ops.cast(0.9, "float64")))
    if keras.backend.backend() == "torch":
        assert rounded == 0.9
    else:
        assert rounded == float(np.float32(0.9)) != 0.9
    assert float(keras.ops.convert_to_numpy(keras.ops.cast(0.875, "float64"))) == 0.875


def test_optax_defaults():
    """optax's ``adamw`` decays by 1e-4 unless told (torch: 1e-2); ``optax_transform`` passes
    every argument."""
    import inspect

    import optax

    assert inspect.signature(optax.adamw).parameters["weight_decay"].default == 1e-4
    assert inspect.signature(optax.adamw).parameters["eps"].default == 1e-8
    adadelta = inspect.signature(optax.adadelta).parameters
    assert (adadelta["rho"].default, adadelta["eps"].default) == (0.9, 1e-6)


# ------------------------------------------------------------------------------ BatchNorm


def _torch_batchnorm(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training-mode step of ``torch.nn.BatchNorm2d`` at its defaults (momentum 0.1, eps
    1e-5) on channels-first ``x``: the output (channels-last) and the running mean and
    variance."""
    import torch

    norm = torch.nn.BatchNorm2d(x.shape[1]).train()
    with torch.no_grad():
        out = norm(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    return out, norm.running_mean.numpy(), norm.running_var.numpy()


def _check_batchnorm(x, out, mean, var, torch_run) -> None:
    """The same output and moving mean as torch; the moving variance takes the biased batch
    variance where torch's takes the unbiased one (``zoo.training``)."""
    want, want_mean, want_var = torch_run
    n = x.size // x.shape[1]
    batch_var = x.var(axis=(0, 2, 3), dtype=np.float64)
    assert np.max(np.abs(out - want)) <= 1e-5
    assert np.max(np.abs(mean - want_mean)) <= 1e-6
    np.testing.assert_allclose(want_var, 0.9 + 0.1 * batch_var * n / (n - 1), rtol=1e-6)
    np.testing.assert_allclose(var, 0.9 + 0.1 * batch_var, rtol=1e-6)
    assert np.min(np.abs(var - want_var)) > 1e-3  # n = 8: the difference is 0.1 x var / 7


def _batchnorm_input() -> np.ndarray:
    return (1.0 + 2.0 * np.random.default_rng(0).standard_normal((2, 3, 2, 2))).astype(np.float32)


@pytest.mark.keras
def test_keras_batchnorm():
    """``keras.layers.BatchNormalization(**batchnorm_arguments())`` (momentum 1 - 0.1, epsilon
    1e-5; Keras's defaults are 0.99 and 1e-3) trains as ``torch.nn.BatchNorm2d()``."""
    import keras

    assert training.batchnorm_arguments() == {"momentum": 0.9, "epsilon": 1e-5}
    x = _batchnorm_input()
    torch_run = _torch_batchnorm(x)
    layer = keras.layers.BatchNormalization(**training.batchnorm_arguments())
    assert (keras.layers.BatchNormalization().momentum, layer.momentum) == (0.99, 0.9)
    out = layer(x.transpose(0, 2, 3, 1), training=True)
    numpy = keras.ops.convert_to_numpy
    _check_batchnorm(
        x, numpy(out), numpy(layer.moving_mean), numpy(layer.moving_variance), torch_run
    )


def test_flax_batchnorm():
    """``nnx.BatchNorm(**batchnorm_arguments())`` (momentum 1 - 0.1; Flax's default 0.99)
    trains as ``torch.nn.BatchNorm2d()``."""
    from flax import nnx

    x = _batchnorm_input()
    torch_run = _torch_batchnorm(x)
    layer = nnx.BatchNorm(x.shape[1], **training.batchnorm_arguments(), rngs=nnx.Rngs(0))
    assert nnx.BatchNorm(3, rngs=nnx.Rngs(0)).momentum == 0.99
    layer.train()
    out = np.asarray(layer(x.transpose(0, 2, 3, 1)))
    _check_batchnorm(x, out, np.asarray(layer.mean[...]), np.asarray(layer.var[...]), torch_run)
