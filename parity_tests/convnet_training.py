"""Training the MNIST ConvNet from scratch in each framework, the way a user of that framework
writes it: PyTorch a plain loop, Keras ``compile`` + ``fit``, Flax an ``nnx.Optimizer`` step
under ``nnx.jit``. Every run starts from the same weights (the reference's, converted with
``weight_convert.transfer``) and sees the same batches (``zoo.datasets.batch_order``), so with
dropout at 0 two runs differ by the frameworks' arithmetic alone.

The recipe (pytorch/examples ``mnist``'s, at the sizes of issue 13): NLL of the log-softmax
output, averaged over the batch; Adadelta with lr 0.5. Adadelta is written the same way in the
three libraries (running averages of g^2 and of the squared step, step = sqrt(E[dx^2] + eps) /
sqrt(E[g^2] + eps) * g, eps inside both roots, no bias correction); only the defaults differ:
torch rho 0.9 / eps 1e-6, Keras rho 0.95 / epsilon 1e-7, optax rho 0.9 / eps 1e-6. ``ADADELTA``
is the optimizer in PyTorch's terms (``zoo.training.Adadelta``) and each framework builds it
with its own builder, which passes every argument.

``python parity_tests/convnet_training.py -o losses.json`` writes the per-step
losses of the three frameworks (Keras on ``KERAS_BACKEND``) for plotting.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch  # before TensorFlow, in any process

from zoo.datasets import Digits, batch_order, digits
from zoo.families.convnet import ConvNetConfig
from zoo.tensor_format import Format, to_port_format
from zoo.training import Adadelta, torch_optimizer

__all__ = [
    "ADADELTA",
    "BATCH",
    "Run",
    "float32_bound",
    "initial_state",
    "train",
]

#: torch.optim.Adadelta's rho and eps (its defaults), the recipe's lr
ADADELTA = Adadelta(lr=0.5, rho=0.9, eps=1e-6)
BATCH = 32
FRAMEWORKS = ("torch", "keras", "flax")


def float32_bound(step: np.ndarray) -> np.ndarray:
    """The float32 bound on |loss - reference loss| at ``step`` (1-based): 1e-5 (rounding: the
    measured differences are <= 5e-7 before the first flipped decision) growing tenfold every
    10 steps from step 10 (the fastest measured separation: keras-tensorflow, 2e-6 at step 20,
    4e-4 at 40, 1e-2 at 50), capped at 0.1 (measured: <= 0.040 over 500 steps, where the
    per-batch losses scatter between 0.003 and 0.4)."""
    grow = 1e-5 * 10.0 ** (np.maximum(step - 10, 0) / 10)
    return np.minimum(grow, 0.1)


@dataclasses.dataclass
class Run:
    """One training run: the loss of every step (float64 copies of the float32 losses; see
    ``train``'s ``per_step``), the trained model, and the framework's own accuracy and
    predictions on the test set."""

    framework: str
    losses: np.ndarray
    model: Any
    accuracy: float
    predictions: np.ndarray


def initial_state(config: ConvNetConfig, seed: int) -> dict[str, np.ndarray]:
    """The reference's default initialization (``nn.Conv2d`` / ``nn.Linear``'s Kaiming-uniform)
    under ``torch.manual_seed(seed)``, as a state dict of NumPy arrays: every run starts here."""
    from weight_convert.frameworks.reference import state_dict
    from zoo.models import build_model

    torch.manual_seed(seed)
    return state_dict(build_model(config))


def _channels_last(x: np.ndarray) -> np.ndarray:
    """The reference's (B, C, H, W) images as the ports take them, contiguous."""
    return np.ascontiguousarray(to_port_format(x, Format.CHANNELS_FIRST))


# ----------------------------------------------------------------------------- PyTorch


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One PyTorch intra-op thread for the duration (the reference's loop and Keras on the torch
    backend): a batch of 32 small images gains nothing from a second one, and on a busy
    two-core machine OpenMP's waiting threads made the loop 5x slower (measured). Restored
    afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train_torch(config, state, data, order, seed: int, dtype: str, per_step: bool) -> Run:
    import torch.nn.functional as F

    from weight_convert.frameworks.reference import load_state_dict
    from zoo.models import build_model

    model = build_model(config)
    load_state_dict(model, state)
    model.to(getattr(torch, dtype))
    torch.manual_seed(seed)  # the dropout masks
    opt = torch_optimizer(ADADELTA, model.parameters())
    x, y = torch.from_numpy(data.train_x.astype(dtype)), torch.from_numpy(data.train_y)
    losses = []
    model.train()
    for idx in torch.from_numpy(order):
        opt.zero_grad()
        loss = F.nll_loss(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(data.test_x.astype(dtype))).argmax(1).numpy()
    return Run("torch", torch.stack(losses).double().numpy(), model, *_score(pred, data))


# ----------------------------------------------------------------------------- Keras


def nll_keras(y_true, log_probs):
    """Per-example NLL of log-probabilities (Keras averages it over the batch)."""
    from keras import ops

    labels = ops.expand_dims(ops.cast(y_true, "int32"), -1)
    return -ops.squeeze(ops.take_along_axis(log_probs, labels, axis=-1), -1)


def _train_keras(config, state, data, order, seed: int, dtype: str, per_step: bool) -> Run:
    from weight_convert.frameworks import keras_port

    with keras_port.dtype_scope(None if dtype == "float32" else dtype):
        return _fit_keras(config, state, data, order, seed, dtype, per_step)


def _fit_keras(config, state, data: Digits, order, seed: int, dtype: str, per_step: bool) -> Run:
    import keras

    from ports.keras.training import keras_optimizer
    from weight_convert import transfer
    from weight_convert.frameworks import keras_port

    keras.utils.set_random_seed(seed)  # the dropout masks
    model = keras_port.build_model(config)
    keras_port.assign(model, transfer.to_port(state, keras_port.shapes(model)))
    model.compile(
        optimizer=keras_optimizer(ADADELTA),
        loss=nll_keras,
    )
    # the batches laid end to end, unshuffled: fit's batches are ``order``'s rows
    flat = order.reshape(-1)
    x, y = _channels_last(data.train_x[flat].astype(dtype)), data.train_y[flat]
    if per_step:  # one step an "epoch", so that the history holds every step's loss (fit keeps
        # its iterator across epochs when steps_per_epoch is given)
        epochs = {"epochs": len(order), "steps_per_epoch": 1}
    else:
        epochs = {"epochs": 1}
    history = model.fit(x, y, batch_size=order.shape[1], shuffle=False, verbose=0, **epochs)
    test_x = _channels_last(data.test_x.astype(dtype))
    logp = keras.ops.convert_to_numpy(model.predict_on_batch(test_x))
    losses = np.asarray(history.history["loss"], dtype=np.float64)
    return Run("keras", losses, model, *_score(logp.argmax(1), data))


# ----------------------------------------------------------------------------- Flax


def _train_flax(config, state, data, order, seed: int, dtype: str, per_step: bool) -> Run:
    from weight_convert.frameworks import flax_port

    with flax_port.dtype_scope(None if dtype == "float32" else dtype):
        return _step_flax(config, state, data, order, seed, dtype)


def _step_flax(config, state, data: Digits, order, seed: int, dtype: str) -> Run:
    import jax.numpy as jnp
    from flax import nnx

    from ports.flax.layers.variables import declare_dtype
    from ports.flax.models import abstract_model
    from ports.flax.training import nnx_optimizer
    from weight_convert import transfer
    from weight_convert.frameworks import flax_port

    model = abstract_model(config, rngs=nnx.Rngs(seed))  # the dropout stream
    declare_dtype(model, jnp.dtype(dtype))
    flax_port.assign(model, transfer.to_port(state, flax_port.shapes(model)))
    optimizer = nnx_optimizer(model, ADADELTA)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            log_probs = model(x)
            return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    x, y = jnp.asarray(_channels_last(data.train_x.astype(dtype))), jnp.asarray(data.train_y)
    model.train()
    losses = [step(model, optimizer, x[idx], y[idx]) for idx in order]
    model.eval()
    test_x = jnp.asarray(_channels_last(data.test_x.astype(dtype)))
    logp = nnx.jit(lambda m, x: m(x))(model, test_x)
    pred = np.asarray(logp).argmax(1)
    return Run("flax", np.asarray(jnp.stack(losses), np.float64), model, *_score(pred, data))


# ----------------------------------------------------------------------------- common


def _score(pred: np.ndarray, data: Digits) -> tuple[float, np.ndarray]:
    return float(np.mean(pred == data.test_y)), pred


_TRAIN = {"torch": _train_torch, "keras": _train_keras, "flax": _train_flax}


def train(
    framework: str,
    config: ConvNetConfig,
    state: Mapping[str, np.ndarray],
    data: Digits,
    order: np.ndarray,
    seed: int = 0,
    dtype: str = "float32",
    per_step: bool = True,
) -> Run:
    """Train ``config``'s model in ``framework`` from the reference state dict ``state`` on the
    batches ``order`` (rows of indices into ``data.train_x``); ``seed`` draws the dropout masks
    (each framework its own stream); ``dtype`` "float64" trains in float64 (Keras: not on the
    JAX and torch backends, which compute in float32). Returns the losses, the model and its
    test accuracy. Keras records every step's loss by fitting one step an epoch; with
    ``per_step`` False it fits the batches as one epoch (what a Keras user writes; cheaper) and
    its losses are that epoch's mean."""
    with _one_thread():
        return _TRAIN[framework](config, state, data, order, seed, dtype, per_step)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", required=True, help="a .json file")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dropout", action="store_true", help="the recipe's rates, not 0")
    args = parser.parse_args(argv)
    config = ConvNetConfig()
    if not args.dropout:
        config = dataclasses.replace(config, dropout1_rate=0.0, dropout2_rate=0.0)
    data = digits()
    order = batch_order(len(data.train_y), BATCH, args.steps, seed=args.seed)
    state = initial_state(config, args.seed)
    runs = {name: train(name, config, state, data, order, args.seed) for name in FRAMEWORKS}
    import keras

    out = {
        "config": dataclasses.asdict(config),
        "steps": args.steps,
        "seed": args.seed,
        "keras_backend": keras.backend.backend(),
        "losses": {name: run.losses.tolist() for name, run in runs.items()},
        "test_accuracy": {name: run.accuracy for name, run in runs.items()},
    }
    with open(args.output, "w") as f:
        json.dump(out, f)
    print(f"{args.output}: {args.steps} steps, backend {out['keras_backend']}")
    for name, run in runs.items():
        diff = np.abs(run.losses - runs["torch"].losses).max()
        print(f"  {name:6s} accuracy {run.accuracy:.4f}  max |loss - torch loss| {diff:.3e}")
    return os.EX_OK


if __name__ == "__main__":
    raise SystemExit(main())
