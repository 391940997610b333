"""One training step of the captioner as the tutorial's ``train.py`` takes it, in each
framework from the same weights: cross-entropy of the packed logits against the packed targets
(``pack_padded_sequence(captions, lengths)[0]``), Adam (``zoo.training.AdamW`` with no weight
decay: torch's Adam update) over ``decoder`` + ``encoder.linear`` + ``encoder.bn`` only (the
ResNet frozen, its BatchNorms still in training mode, as the tutorial's encoder is), the
encoder's ``bn`` a BatchNorm1d with momentum 0.01.

Held equal: the loss, every trained parameter's gradient, every parameter after the step (the
ResNet's untouched, bit for bit), every BatchNorm's running statistics and counter after the
step. Keras runs on TensorFlow (``tf.GradientTape``): the Keras code is the same on every
backend, whose gradients the suite's ``test_gradients`` holds on each."""

from __future__ import annotations

import numpy as np
import pytest
import torch  # before TensorFlow
from family_suite import keras_on_tensorflow_only, port_model, reference_model

from weight_convert import transfer
from weight_convert.frameworks.reference import state_dict
from weight_convert.parity import MODEL_GRAD_TOLERANCE
from weight_convert.parity.report import layer_error
from zoo.packing import packed_order
from zoo.registry import FAMILIES
from zoo.tensor_format import Format, to_port_format
from zoo.training import AdamW

#: the tutorial's optimizer: Adam, lr 1e-3 (AdamW without weight decay is Adam's update)
ADAM = AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
LENGTHS = (7, 5, 5, 3, 1)
#: |loss - reference loss| <= 1e-6 x loss; parameters after the step within 1e-6 x (1 + max
#: |parameter|) (lr 1e-3 times a 1e-3 relative difference of Adam's first step, plus float32
#: rounding of the parameter itself: measured 9.5e-7 on a tensor reaching ~8); running statistics
#: within 1e-6 x max |PyTorch's| (test_batchnorm's bound)
LOSS_RTOL, PARAM_ATOL, STAT_RTOL = 1e-6, 1e-6, 1e-6
#: a parameter whose gradient is zero in exact arithmetic: the linear layer's bias before a
#: BatchNorm in training mode (the batch mean is subtracted). Its computed gradient is rounding
#: noise (~1e-9) in every framework, and Adam's first step, lr * g / (|g| + eps), turns that
#: noise into steps of up to lr / 10 of either sign: held to |gradient| <= 1e-6 x the largest
#: gradient and |step| <= lr, not to the reference's value (the tutorial's model has the quirk)
NOISE_ONLY = {"encoder.linear.bias"}


def _trained(key: str) -> bool:
    return not key.startswith("encoder.resnet.")


def _batch(seed: int = 6):
    config = FAMILIES["captioner"].tiny
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((len(LENGTHS), 3, 32, 32)).astype(np.float32)
    captions = rng.integers(1, config.vocab_size, (len(LENGTHS), 7)).astype(np.int32)
    return config, images, captions


def _torch_step(config, images, captions, seed):
    from torch.nn.utils.rnn import pack_padded_sequence

    from zoo.training import torch_optimizer

    model = reference_model(config, seed).train()
    params = [
        *model.decoder.parameters(),
        *model.encoder.linear.parameters(),
        *model.encoder.bn.parameters(),
    ]
    optimizer = torch_optimizer(ADAM, params)
    caps = torch.from_numpy(captions).long()
    targets = pack_padded_sequence(caps, list(LENGTHS), batch_first=True)[0]
    out = model(torch.from_numpy(images), caps, LENGTHS)
    loss = torch.nn.functional.cross_entropy(out, targets)
    model.zero_grad()
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters() if _trained(k)}
    optimizer.step()
    return float(loss.detach()), grads, state_dict(model)


def _flax_step(config, images, captions, state, plant=None):
    import optax
    from flax import nnx

    from ports.flax.training import optax_transform
    from weight_convert.frameworks import flax_port

    model = port_model(flax_port, config)
    flax_port.assign(model, transfer.to_port(state, flax_port.shapes(model)))
    if plant is not None:
        plant(model)
    model.train()
    trained = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("resnet")))
    optimizer = nnx.Optimizer(model, optax_transform(ADAM), wrt=trained)
    b, t = packed_order(LENGTHS)
    targets = captions[b, t]
    x = to_port_format(images, Format.CHANNELS_FIRST)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(m):
            logits = m(x, captions, LENGTHS)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trained))(model)
        optimizer.update(model, grads)
        return loss, grads

    loss, grads = step(model, optimizer)
    flat = {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(grads)}
    return float(loss), transfer.to_torch(flat), transfer.to_torch(flax_port.read(model))


def _keras_step(config, images, captions, state, plant=None):
    import keras
    import tensorflow as tf

    from ports.keras.training import keras_optimizer
    from weight_convert.frameworks import keras_port

    keras_on_tensorflow_only(f"keras-{keras.backend.backend()}")
    model = port_model(keras_port, config)
    x = to_port_format(images, Format.CHANNELS_FIRST)
    keras_port.materialize(model, [x, captions], initialize=False)
    keras_port.assign(model, transfer.to_port(state, keras_port.shapes(model)))
    if plant is not None:
        plant(model)
    paths = {keras_port._port_path(v.path, model): v for v in model.trainable_variables}
    trained = {p: v for p, v in paths.items() if _trained(p)}
    b, t = packed_order(LENGTHS)
    targets = captions[b, t]
    with tf.GradientTape() as tape:
        logits = model(x, captions, lengths=list(LENGTHS), training=True)
        loss = keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        )
    # the embedding's gradient is IndexedSlices (one slice per caption token); AdamW sums
    # the repeated ids as PyTorch does (test_adam_on_repeated_ids_is_pytorchs)
    grads = tape.gradient(loss, list(trained.values()))
    keras_optimizer(ADAM).apply_gradients(zip(grads, list(trained.values()), strict=True))
    flat = {
        p: keras.ops.convert_to_numpy(tf.convert_to_tensor(g))
        for p, g in zip(trained, grads, strict=True)
    }
    return float(loss), transfer.to_torch(flat), transfer.to_torch(keras_port.read(model))


STEPS = {"flax": _flax_step, "keras": _keras_step}


def _stat_errors(got, want) -> dict[str, float]:
    """Relative error of every running statistic (every BatchNorm of the model)."""
    return {
        k: float(np.max(np.abs(got[k] - want[k])) / np.max(np.abs(want[k])))
        for k in want
        if k.endswith(("running_mean", "running_var"))
    }


@pytest.fixture(scope="module")
def reference_step():
    config, images, captions = _batch()
    before = state_dict(reference_model(config, 7))
    return config, images, captions, before, _torch_step(config, images, captions, 7)


@pytest.mark.parametrize("framework", ["flax", pytest.param("keras", marks=pytest.mark.keras)])
def test_one_training_step(framework, reference_step):
    """Loss within 1e-6 relative; each trained parameter's gradient within the whole-model
    gradient bound (1e-4 x its max |reference|); the parameters after the step within
    1e-6 x (1 + max |parameter|),
    the ResNet's unchanged; every running statistic within 1e-6 x max |PyTorch's| and every
    ``num_batches_tracked`` one up, as PyTorch's."""
    config, images, captions, before, (loss, grads, after) = reference_step
    got_loss, got_grads, got_after = STEPS[framework](config, images, captions, before)
    assert abs(got_loss - loss) <= LOSS_RTOL * abs(loss), (got_loss, loss)
    assert set(got_grads) == set(grads)
    scale = max(float(np.max(np.abs(g))) for g in grads.values())
    for key in NOISE_ONLY:
        for g in (grads[key], got_grads[key]):
            assert np.max(np.abs(g)) <= 1e-6 * scale, (key, np.max(np.abs(g)), scale)
    errors = [
        layer_error(k, 0, g, got_grads[k], MODEL_GRAD_TOLERANCE, scale) for k, g in grads.items()
    ]
    assert not [e for e in errors if e.exceeded], [(e.path, e.max_abs, e.bound) for e in errors]
    for key, value in after.items():
        if key.endswith("num_batches_tracked"):
            assert int(got_after[key]) == int(value) == int(before[key]) + 1, key
        elif key.endswith(("running_mean", "running_var")):
            continue
        elif key in NOISE_ONLY:
            for moved in (value, got_after[key]):
                assert np.max(np.abs(moved - before[key])) <= ADAM.lr * (1 + 1e-6), key
        elif _trained(key):
            bound = PARAM_ATOL * (1 + np.max(np.abs(value)))
            assert np.max(np.abs(got_after[key] - value)) <= bound, key
            assert not np.array_equal(value, before[key]), key
        else:
            assert np.array_equal(got_after[key], before[key]), key
            assert np.array_equal(value, before[key]), key
    stats = _stat_errors(got_after, after)
    assert len(stats) == 2 * sum(k.endswith("running_mean") for k in after)
    assert all(e <= STAT_RTOL for e in stats.values()), stats


@pytest.mark.parametrize(
    "framework",
    # Flax's BatchNorm2d reads momentum as Keras's does: the bug plants the same way; the
    # second compile of the Flax step is CI time (~5 s), so Flax runs it with -m slow
    [pytest.param("flax", marks=pytest.mark.slow), pytest.param("keras", marks=pytest.mark.keras)],
)
def test_keras_momentum_in_bn_fails_there(framework, reference_step):
    """Planted bug: the encoder's BatchNorm1d given 0.99, Keras's reading of PyTorch's 0.01
    (``keras.layers.BatchNormalization(momentum=0.99)`` is PyTorch's ``momentum=0.01``): after
    the step ``encoder.bn``'s running statistics leave the bound, every other BatchNorm's stay
    within it."""
    config, images, captions, before, (_, _, after) = reference_step

    def plant(model):
        model.encoder.bn.momentum = 0.99

    _, _, got_after = STEPS[framework](config, images, captions, before, plant)
    stats = _stat_errors(got_after, after)
    failed = {k for k, e in stats.items() if e > STAT_RTOL}
    assert failed == {"encoder.bn.running_mean", "encoder.bn.running_var"}, stats


@pytest.mark.keras
def test_adam_on_repeated_ids_is_pytorchs():
    """On TensorFlow a gathered table's gradient is ``IndexedSlices`` with one slice per lookup,
    and Keras's own Adam updates its second moment with each slice squared: a row looked up
    twice with gradient 1 + 1 moves lr * 2 / sqrt(1 + 1) = 1.41 lr, where PyTorch's Adam moves
    it lr (2 / sqrt(4)). ``ports.keras.training.AdamW`` sums the slices first: PyTorch's step,
    with or without densifying. Keras's Adam is pinned: when Keras sums the slices itself, the
    pin fails and can go."""
    import keras

    keras_on_tensorflow_only(f"keras-{keras.backend.backend()}")
    import tensorflow as tf

    from ports.keras.training import keras_optimizer

    def step(optimizer, dense: bool) -> np.ndarray:
        table = keras.Variable(np.ones((3, 2), np.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(table, [0, 0, 1]))
        grad = tape.gradient(loss, table)
        assert isinstance(grad, tf.IndexedSlices)
        grad = tf.convert_to_tensor(grad) if dense else grad
        optimizer.apply_gradients([(grad, table)])
        return 1.0 - keras.ops.convert_to_numpy(table)

    for dense in (False, True):
        moved = step(keras_optimizer(ADAM), dense)
        assert np.allclose(moved[:2], ADAM.lr, rtol=1e-4) and not moved[2].any(), moved
    keras_adam = keras.optimizers.Adam(ADAM.lr, epsilon=ADAM.eps)
    assert np.allclose(step(keras_adam, dense=False)[0], ADAM.lr * np.sqrt(2.0), rtol=1e-4)
