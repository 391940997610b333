"""BatchNorm2d in the ports as ``torch.nn.BatchNorm2d`` behaves, in training mode too.

Eval-mode parity of every case is ``test_blocks_parity.py`` (random running statistics and
affine parameters). Here: training-mode outputs and gradients, the running statistics after
several training steps (PyTorch's momentum, the unbiased variance into ``running_var``,
``num_batches_tracked``) through each framework's training path (Keras: ``model(x,
training=True)``, ``stateless_call``, ``fit``; Flax: ``model.train()`` under ``nnx.jit`` and
``nnx.grad``), the int64 counter's conversion, and the planted bugs each check catches.
"""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from weight_convert import rules, transfer
from weight_convert.errors import DtypeOverflowError
from weight_convert.frameworks import reference as ref_fw
from weight_convert.parity import BLOCK_TOLERANCE, run_case
from weight_convert.parity.comparison import load_reference_weights

CASES = zoo.BLOCKS["BatchNorm2d"]
#: the running statistics after the training steps: max abs error <= 1e-6 x max |PyTorch's|
STAT_RTOL = 1e-6
#: batches of odd sizes (n = 105, 2 x 9 = 18 and 4 x 6 = 24 values per channel: the unbiased
#: factor n / (n - 1) differs per step)
STEP_SHAPES = ((3, 7, 5), (2, 1, 9), (1, 4, 6))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_training_mode_parity(case, port):
    """Training mode (batch statistics, the biased variance): outputs within 1e-5."""
    report = run_case(case, port, training=True)
    assert report.passed, report.table()
    assert report.settings["mode"] == "training" and BLOCK_TOLERANCE.atol == 1e-5


@pytest.mark.parametrize("case", CASES[:2], ids=[c.name for c in CASES[:2]])
def test_training_mode_gradients(case, port):
    """Backward through the batch statistics: every gradient within the block bound."""
    report = run_case(case, port, training=True, gradients=True)
    assert report.passed, report.table()
    assert [e.path for e in report.layers] == ["weight", "bias"]


def _setup(port, kwargs, seed=0):
    """A random reference ``nn.BatchNorm2d(**kwargs)`` (running statistics too) and its port
    holding the same values."""
    reference = ref_fw.randomize_(ref_fw.build("BatchNorm2d", kwargs), seed)
    module = port.build("BatchNorm2d", kwargs, initialize=False)
    c = kwargs["num_features"]
    load_reference_weights(port, module, reference, [np.zeros((2, 3, 3, c), np.float32)])
    return reference, module


def _batches(c: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (1.5 * rng.standard_normal((b, c, h, w)) + 0.7).astype(np.float32)
        for b, h, w in STEP_SHAPES
    ]


def _reference_steps(reference, batches) -> dict[str, np.ndarray]:
    for x in batches:
        ref_fw.call(reference, [x], training=True)
    return ref_fw.state_dict(reference)


def _stat_errors(port_values: dict[str, np.ndarray], expected: dict[str, np.ndarray]):
    """Relative errors of the running statistics (port values by port path), the counter's
    value and dtype as PyTorch reads them back."""
    got = transfer.to_torch(port_values)
    errors = {
        key: float(np.max(np.abs(got[key] - expected[key])) / np.max(np.abs(expected[key])))
        for key in ("running_mean", "running_var")
    }
    counter = got["num_batches_tracked"]
    return errors, (counter.dtype, int(counter)), int(expected["num_batches_tracked"])


def _assert_stats(port_values, expected) -> None:
    errors, (dtype, count), want = _stat_errors(port_values, expected)
    assert all(e <= STAT_RTOL for e in errors.values()), errors
    assert dtype == np.int64 and count == want


def _train_eagerly(port, module, batches) -> None:
    """The port's training path of the adapter: Keras ``module(x, training=True)``, Flax
    ``nnx.view(module, deterministic=False)`` (``flax_port.mode``)."""
    from zoo.tensor_format import Format, to_port_format

    for x in batches:
        port.call(module, [to_port_format(x, Format.CHANNELS_FIRST)], training=True)


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum-0.1", "cumulative"])
def test_running_statistics(momentum, port):
    """Three training steps on batches of different sizes: running_mean / running_var within
    1e-6 x max |PyTorch's|, num_batches_tracked equal (int64 once converted back), the inputs'
    count added to the random starting count."""
    kwargs = dict(num_features=8, momentum=momentum)
    reference, module = _setup(port, kwargs)
    batches = _batches(8)
    start = int(reference.num_batches_tracked)
    expected = _reference_steps(reference, batches)
    assert int(expected["num_batches_tracked"]) == start + len(batches)
    _train_eagerly(port, module, batches)
    _assert_stats(port.read(module), expected)


#: (bug, what it plants in the port, the statistics it must break)
BUGS = {
    "biased-variance": ("unbiased_variance", None, {"running_var"}),
    "keras-momentum-0.9": ("momentum", 0.9, {"running_mean", "running_var"}),
}


@pytest.mark.parametrize("bug", list(BUGS))
def test_running_statistics_planted_bugs(bug, port, monkeypatch):
    """The biased batch variance into running_var (Keras's and nnx's habit), or momentum 0.9
    (Keras's 0.99 read in PyTorch's sense, 1 - 0.1 taken for 0.1): the statistics it touches
    leave the bound, the others stay within it."""
    import importlib

    attribute, value, broken = BUGS[bug]
    reference, module = _setup(port, dict(num_features=8))
    expected = _reference_steps(reference, _batches(8))
    if attribute == "unbiased_variance":
        framework = port.NAME.split("-")[0]
        norm = importlib.import_module(f"ports.{framework}.layers.norm")
        monkeypatch.setattr(norm, "unbiased_variance", lambda var, n: var)
    else:
        monkeypatch.setattr(module, attribute, value)
    _train_eagerly(port, module, _batches(8))
    errors, _, _ = _stat_errors(port.read(module), expected)
    assert {k for k, e in errors.items() if e > STAT_RTOL} == broken, errors


def test_planted_eps_fails_eval_parity(port):
    """eps 1e-3 (Keras's default) in the port: eval-mode parity fails (random running
    variances in [0.5, 2] make the difference ~1e-4 and more)."""

    def plant(module) -> None:
        module.eps = 1e-3

    report = run_case(CASES[0], port, after_transfer=plant)
    assert not report.passed
    assert report.first_failure.max_abs > 10 * BLOCK_TOLERANCE.atol, report.table()


@pytest.mark.keras
def test_keras_stateless_call_and_fit():
    """Keras's functional training paths: ``stateless_call(..., training=True)`` returns the
    updated statistics and leaves the layer's own as they were; ``fit`` (SGD at learning rate 0,
    one batch per step, no shuffling: the JAX backend's compiled stateless step, TensorFlow's
    ``tf.function``, torch's eager loop) updates them as three PyTorch training steps do."""
    import keras

    from weight_convert.frameworks import keras_port as port

    batches = _batches(8)
    reference, layer = _setup(port, dict(num_features=8))
    before = port.read(layer)
    expected_one = _reference_steps(reference, batches[:1])
    x = np.moveaxis(batches[0], 1, -1)
    y, non_trainable = layer.stateless_call(
        [v.value for v in layer.trainable_variables],
        [v.value for v in layer.non_trainable_variables],
        x,
        training=True,
    )
    paths = [port._port_path(v.path, layer) for v in layer.non_trainable_variables]
    updated = {
        **before,
        **{p: keras.ops.convert_to_numpy(v) for p, v in zip(paths, non_trainable, strict=True)},
    }
    _assert_stats(updated, expected_one)
    for path, value in port.read(layer).items():
        assert np.array_equal(value, before[path]), f"{path} changed outside stateless_call"

    # fit: one batch per step; batches of one shape (fit stacks them)
    reference, layer = _setup(port, dict(num_features=8), seed=2)
    rng = np.random.default_rng(3)
    xs = (rng.standard_normal((3 * 4, 8, 5, 7)) + 0.3).astype(np.float32)
    expected = _reference_steps(reference, [xs[i : i + 4] for i in range(0, 12, 4)])
    inputs = keras.Input((5, 7, 8), batch_size=4)
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    xs_last = np.moveaxis(xs, 1, -1)
    model.fit(xs_last, np.zeros_like(xs_last), batch_size=4, epochs=1, shuffle=False, verbose=0)
    _assert_stats(port.read(layer), expected)


def test_flax_jit_and_grad_update_running_statistics():
    """Flax's training paths: ``model.train()`` then a ``nnx.jit``-ted forward, and a
    ``nnx.jit``-ted ``nnx.grad`` step (the statistics are ``nnx.BatchStat``: their updates leave
    both transforms); ``model.eval()`` then leaves them alone."""
    import jax.numpy as jnp
    from flax import nnx

    from weight_convert.frameworks import flax_port as port

    batches = _batches(8)
    reference, module = _setup(port, dict(num_features=8))
    expected = _reference_steps(reference, batches)
    module.train()
    assert module.use_running_average is False
    forward = nnx.jit(lambda m, x: m(x))
    grad_step = nnx.jit(nnx.grad(lambda m, x: jnp.sum(m(x) ** 2)))
    xs = [jnp.asarray(np.moveaxis(x, 1, -1)) for x in batches]
    forward(module, xs[0])
    forward(module, xs[1])
    grads = grad_step(module, xs[2])
    assert {p for p, _ in nnx.to_flat_state(grads)} == {("scale",), ("bias",)}
    _assert_stats(port.read(module), expected)
    module.eval()
    after = port.read(module)
    forward(module, xs[0])
    for path, value in port.read(module).items():
        assert np.array_equal(value, after[path]), path


def test_counter_converts_exactly():
    """num_batches_tracked: PyTorch's int64 is the ports' int32 and back, every value exactly;
    one beyond int32 is refused naming the variable, never wrapped."""
    path = "layer1.0.bn1.num_batches_tracked"
    for value in (0, 7, 2**31 - 1):
        port_value = rules.port_tensor(path, np.array(value, np.int64))
        assert port_value.dtype == np.int32 and int(port_value) == value
        back = rules.torch_tensor(path, port_value)
        assert back.dtype == np.int64 and int(back) == value
    assert rules.port_dtype(path, np.dtype(np.int64)) == np.int32
    assert rules.torch_dtype(path, np.dtype(np.int32)) == np.int64
    with pytest.raises(DtypeOverflowError, match=rf"{path}: values up to 2147483648 do not fit"):
        rules.port_tensor(path, np.array(2**31, np.int64))
    assert rules.torch_key("bn1.moving_variance") == "bn1.running_var"
    assert rules.torch_key("bn1.moving_mean") == "bn1.running_mean"
    assert rules.torch_key("bn1.running_var") == "bn1.running_var"
