"""The MNIST ConvNet trained from scratch in PyTorch, Keras (on each backend) and Flax, from the
same initial weights and the same batches (convnet_training.py: the three recipes), on
scikit-learn's digits resized to 28 x 28 (zoo.datasets).

- float64, dropout 0: the loss of every step equals the reference's to rounding, with no growth
  (the tiny config, 120 steps; the recipe's size, 300 steps, under ``slow``).
- float32, dropout 0: the losses agree to rounding until the first step where a max-pool or
  ReLU decision that rounding decides goes the other way in one framework; from there the two
  trajectories separate, exponentially, until their difference is the size of the losses'
  own step-to-step scatter. The bound (``float32_bound``) states that.
- dropout on: each framework draws its own masks; the test accuracies agree within the
  binomial margin of the test set.
- the Keras- and Flax-trained weights, saved as their users save them and converted to a
  PyTorch checkpoint by ``weight_convert.convert``, give the same predictions in the reference.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
from convnet_training import BATCH, Run, float32_bound, initial_state, train

from zoo.datasets import batch_order, digits
from zoo.families.convnet import ConvNetConfig
from zoo.registry import FAMILIES

TARGETS = [pytest.param("keras", marks=pytest.mark.keras), "flax"]

#: the recipe's model with dropout at 0 (the loss-curve comparisons)
NO_DROPOUT = dataclasses.replace(ConvNetConfig(), dropout1_rate=0.0, dropout2_rate=0.0)
#: float32 loss-curve steps: in CI and under ``slow``
STEPS, LONG_STEPS = 40, 500
#: float64 loss-curve steps (the tiny config in CI; the recipe's size under ``slow``)
F64_STEPS, F64_LONG_STEPS = 120, 300
#: float64: every step's |loss - reference loss| (measured: <= 2e-15 over 300 steps)
F64_BOUND = 1e-12
#: dropout-on runs: steps (about 2 epochs), and the accuracy every framework must reach
DROPOUT_STEPS, MIN_ACCURACY = 80, 0.85


@functools.cache
def _data(size: int):
    return digits(size=size)


@functools.cache
def _run(
    framework: str, config: ConvNetConfig, steps: int, dtype: str = "float32", per_step=True
) -> Run:
    """One training run, once per process: seed 0 for the initial weights, the batch order and
    the dropout masks."""
    data = _data(config.img_size)
    order = batch_order(len(data.train_y), BATCH, steps, seed=0)
    state = initial_state(config, 0)
    return train(framework, config, state, data, order, seed=0, dtype=dtype, per_step=per_step)


def _skip_keras_float64(target: str) -> None:
    if target == "keras":
        import keras

        if keras.backend.backend() != "tensorflow":
            pytest.skip(
                f"Keras promotes float64 to float32 on the {keras.backend.backend()} backend"
            )


def _curve_differences(target: str, config, steps: int, dtype: str) -> np.ndarray:
    reference, port = _run("torch", config, steps, dtype), _run(target, config, steps, dtype)
    assert reference.losses.shape == port.losses.shape == (steps,)
    assert np.all(np.isfinite(port.losses))
    return np.abs(port.losses - reference.losses)


# ----------------------------------------------------------------------------- data


def test_digits_are_resized_as_pytorch_resizes():
    """28 x 28 digits: bilinear as F.interpolate (align_corners=False) computes it within 1e-6,
    normalized with the MNIST mean / std, a fixed split, the same arrays on every call."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    data = digits()
    assert data.train_x.shape == (1297, 1, 28, 28) and data.test_x.shape == (500, 1, 28, 28)
    assert data.train_x.dtype == np.float32 and data.train_y.dtype == np.int64
    images = torch.from_numpy(load_digits().images.astype(np.float32)[:, None] / 16)
    resized = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    everything = np.concatenate([data.train_x, data.test_x]) * 0.3081 + 0.1307
    order = np.random.default_rng(0).permutation(1797)
    expected = resized.numpy()[np.concatenate([order[500:], order[:500]])]
    np.testing.assert_allclose(everything, expected, rtol=0, atol=1e-6)
    again = digits()
    assert np.array_equal(again.train_x, data.train_x) and np.array_equal(again.test_y, data.test_y)
    assert sorted(set(data.test_y.tolist())) == list(range(10))


def test_batch_order_is_seeded_permutations():
    order = batch_order(1297, 32, 100, seed=0)
    assert order.shape == (100, 32)
    first_epoch = order[:40].reshape(-1)  # 1297 // 32 = 40 full batches an epoch
    assert len(set(first_epoch.tolist())) == 1280 and first_epoch.max() < 1297
    assert not np.array_equal(order[:40], order[40:80])  # a fresh permutation each epoch
    assert np.array_equal(order, batch_order(1297, 32, 100, seed=0))
    assert not np.array_equal(order, batch_order(1297, 32, 100, seed=1))


# ----------------------------------------------------------------------------- loss curves


@pytest.mark.parametrize("target", TARGETS)
def test_float64_loss_curves_are_exact(target):
    """float64, dropout 0, the tiny config (the recipe otherwise): every step's loss within
    F64_BOUND of the reference's over F64_STEPS steps, and the trained weights too."""
    _skip_keras_float64(target)
    tiny = dataclasses.replace(FAMILIES["convnet"].tiny, dropout1_rate=0.0, dropout2_rate=0.0)
    diff = _curve_differences(target, tiny, F64_STEPS, "float64")
    assert diff.max() <= F64_BOUND, (diff.argmax() + 1, diff.max())
    reference = _run("torch", tiny, F64_STEPS, "float64")
    assert reference.losses[-20:].mean() < 0.5 * reference.losses[:20].mean()  # it trained
    from weight_convert import transfer
    from weight_convert.frameworks import port
    from weight_convert.frameworks.reference import state_dict

    trained = transfer.to_torch(port(target).read(_run(target, tiny, F64_STEPS, "float64").model))
    for key, value in state_dict(reference.model).items():
        assert np.abs(trained[key] - value).max() <= F64_BOUND * np.abs(value).max(), key


def _check_float32_curve(target: str, steps: int) -> np.ndarray:
    """Every one of ``steps`` steps' |loss - reference loss| within ``float32_bound``."""
    diff = _curve_differences(target, NO_DROPOUT, steps, "float32")
    over = np.flatnonzero(diff > float32_bound(np.arange(1, steps + 1)))
    assert over.size == 0, f"step {over[0] + 1}: {diff[over[0]]:.3e} > bound"
    return diff


@pytest.mark.parametrize("target", TARGETS)
def test_float32_loss_curves_agree(target):
    """float32, dropout 0, the recipe: every one of STEPS steps within ``float32_bound``, the
    first 10 within rounding (1e-5)."""
    assert _check_float32_curve(target, STEPS)[:10].max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_float32_loss_curves_agree_long(target):
    _check_float32_curve(target, LONG_STEPS)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_float64_loss_curves_are_exact_full_size(target):
    _skip_keras_float64(target)
    diff = _curve_differences(target, NO_DROPOUT, F64_LONG_STEPS, "float64")
    assert diff.max() <= F64_BOUND, (diff.argmax() + 1, diff.max())


# ----------------------------------------------------------------------------- dropout on


def _dropout_runs(target: str) -> tuple[Run, Run]:
    config = ConvNetConfig()
    return _run("torch", config, DROPOUT_STEPS), _run(target, config, DROPOUT_STEPS, per_step=False)


@pytest.mark.parametrize("target", TARGETS)
def test_dropout_accuracies_agree(target):
    """The recipe with dropout (0.1, 0.25), each framework its own masks: both learn, and the
    test accuracies differ by at most 3 standard deviations of the difference of two binomial
    estimates on the test set (sqrt(2 p (1 - p) / n), p the reference's accuracy)."""
    reference, port = _dropout_runs(target)
    n = len(_data(28).test_y)
    p = reference.accuracy
    margin = 3 * np.sqrt(2 * p * (1 - p) / n)
    assert min(reference.accuracy, port.accuracy) >= MIN_ACCURACY
    assert abs(port.accuracy - p) <= margin, (port.accuracy, p, margin)


@pytest.mark.parametrize("target", TARGETS)
def test_trained_weights_convert_back_to_pytorch(target, tmp_path):
    """Saved as the framework's users save (``model.save`` to ``.keras``,
    ``ports.flax.serialization.save``), converted by ``weight_convert.convert`` to a ``.pth``
    that ``torch.load`` + ``load_state_dict`` read into the reference: the same test predictions
    (but where the port's top two log-probabilities are within 1e-4) and the same accuracy."""
    from weight_convert.convert import convert
    from zoo.models import ConvNet

    _, run = _dropout_runs(target)
    if target == "keras":
        saved = tmp_path / "convnet.keras"
        run.model.save(saved)
    else:
        from ports.flax import serialization

        saved = tmp_path / "convnet.safetensors"
        serialization.save(run.model, saved)
    summary, _ = convert(saved, "torch", tmp_path / "convnet.pth")
    assert summary.detected["family"] == "convnet"
    model = ConvNet(run.model.config).eval()
    model.load_state_dict(torch.load(tmp_path / "convnet.pth", weights_only=True))
    data = _data(28)
    with torch.no_grad():
        log_probs = model(torch.from_numpy(data.test_x)).numpy()
    pred = log_probs.argmax(1)
    top2 = np.sort(log_probs, axis=1)[:, -2:]
    near_tie = top2[:, 1] - top2[:, 0] < 1e-4
    assert np.all((pred == run.predictions) | near_tie)
    accuracy = float(np.mean(pred == data.test_y))
    assert abs(accuracy - run.accuracy) <= near_tie.mean()
    assert accuracy >= MIN_ACCURACY
