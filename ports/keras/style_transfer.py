"""Neural style transfer, Keras 3 (any backend): ``zoo.style``'s loss and settings, the pixels the
one trainable weight of a ``StyleImage`` model fitted with ``model.fit`` (one step an epoch), so
each backend computes the gradient its own way (no backend code here).

The optimizer is ``ports.keras.training.AdamW`` with no weight decay (PyTorch's Adam: epsilon on
the bias-corrected root), with ``RecordingAdam`` keeping each step's pixel gradient when asked;
the pixels are clipped to [0, 1] after each update by the weight's ``constraint`` (Keras applies
it after the optimizer's step, as the reference clamps after ``optimizer.step()``).
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
from keras import ops

from ports.keras.training import AdamW
from zoo.style import LBFGS, StyleResult, StyleSettings, images, returning_layers

__all__ = ["RecordingAdam", "StyleImage", "features_of", "gram", "transfer"]


def _positions(f):
    """A channels-last feature as (B, M, N): positions x channels ((B, H, W, C) maps, (B, T, D)
    tokens)."""
    if len(f.shape) == 4:
        return ops.reshape(f, (f.shape[0], -1, f.shape[-1]))
    if len(f.shape) == 3:
        return f
    raise ValueError(f"a feature of shape {tuple(f.shape)} is no map and no token sequence")


def gram(f):
    """``F F^T`` (B, N, N), unnormalized, of a map (B, H, W, C) or tokens (B, T, D)."""
    x = _positions(f)
    return ops.matmul(ops.transpose(x, (0, 2, 1)), x)


def features_of(backbone: keras.Model, x, settings: StyleSettings) -> dict:
    """The backbone's features of the (B, H, W, 3) [0, 1] image ``x``, normalized as its
    weights expect."""
    order, a, b = settings.normalization_for(backbone.config).affine()
    y = ops.add(ops.multiply(ops.take(x, order, axis=-1), a), b)
    return backbone(y, training=False)


def style_loss(feats: dict, content: dict, style_grams: dict, image, settings: StyleSettings):
    """``zoo.style``'s total loss (see ``zoo.style_transfer.style_loss``)."""
    total = ops.zeros((), dtype="float32")
    if settings.content_layers:
        c = sum(
            ops.multiply(0.5, ops.sum(ops.square(ops.subtract(feats[n], content[n]))))
            for n in settings.content_layers
        )
        total = ops.add(total, ops.multiply(settings.content_weight, c))
    if settings.style_layers:
        s = ops.zeros((), dtype="float32")
        for name, w in zip(settings.style_layers, settings.layer_weights, strict=True):
            x = _positions(feats[name])
            m, n = x.shape[1], x.shape[2]
            d = ops.sum(ops.square(ops.subtract(gram(feats[name]), style_grams[name])))
            s = ops.add(s, ops.divide(ops.multiply(w, d), 4.0 * n * n * m * m))
        total = ops.add(total, ops.multiply(settings.style_weight, s))
    if settings.tv_weight:
        down = ops.sum(ops.square(ops.subtract(image[:, 1:], image[:, :-1])))
        across = ops.sum(ops.square(ops.subtract(image[:, :, 1:], image[:, :, :-1])))
        total = ops.add(total, ops.multiply(settings.tv_weight, ops.add(down, across)))
    return total


class _UnitInterval(keras.constraints.Constraint):
    def __call__(self, w):
        return ops.clip(w, 0.0, 1.0)


class RecordingAdam(AdamW):
    """``ports.keras.training.AdamW`` that keeps the last gradient of each variable in an
    optimizer variable (``last_gradient(variable)``), carried through every backend's
    stateless training step like the moments."""

    def build(self, var_list) -> None:
        if self.built:
            return
        super().build(var_list)
        self.gradients = self.add_optimizer_variables(var_list, "gradient")

    def update_step(self, gradient, variable, learning_rate):
        self.assign(self.gradients[self._get_variable_index(variable)], gradient)
        super().update_step(gradient, variable, learning_rate)

    def last_gradient(self, variable) -> np.ndarray:
        return ops.convert_to_numpy(self.gradients[self._get_variable_index(variable)])


class _Gradients(keras.callbacks.Callback):
    def __init__(self, image) -> None:
        super().__init__()
        self.image, self.gradients = image, []

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self.gradients.append(self.model.optimizer.last_gradient(self.image)[0].copy())


class _LastLoss(keras.metrics.Metric):
    """The loss of the last step (``logs["step_loss"]``), not the epoch's running mean."""

    def __init__(self, name: str = "step_loss", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.last = self.add_variable(shape=(), initializer="zeros", name="last")

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        self.last.assign(ops.reshape(ops.cast(y_pred, self.dtype), ()))

    def result(self):
        return ops.convert_to_tensor(self.last)


class _StepLosses(keras.callbacks.Callback):
    """Each step's loss and wall time (logs arrive as numbers: the step is done)."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []
        self.seconds: list[float] = []

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self.losses.append(float(logs["step_loss"]))
        self.seconds.append(time.perf_counter() - self._start)


class StyleImage(keras.Model):
    """The image being optimized (``image``, (1, H, W, 3), the one trainable weight) and the
    loss of it: ``call`` returns the loss as a (1,) tensor (the backbone, frozen, and the
    targets are fixed)."""

    def __init__(self, backbone, content_feats, style_grams, init, settings, **kwargs) -> None:
        super().__init__(**kwargs)
        self.backbone, self.settings = backbone, settings
        backbone.trainable = False
        self.image = self.add_weight(
            shape=(1, *init.shape),
            initializer=keras.initializers.Constant(init[None]),
            constraint=_UnitInterval() if settings.clip else None,
            name="image",
        )
        self.content = {
            n: self._fixed(f"content_{i}", content_feats[n])
            for i, n in enumerate(settings.content_layers)
        }
        self.grams = {
            n: self._fixed(f"gram_{i}", style_grams[n]) for i, n in enumerate(settings.style_layers)
        }

    def _fixed(self, name: str, value: np.ndarray):
        return self.add_weight(
            shape=value.shape,
            initializer=keras.initializers.Constant(value),
            trainable=False,
            name=name,
        )

    def call(self, x, training=None):
        feats = features_of(self.backbone, self.image, self.settings)
        loss = style_loss(feats, self.content, self.grams, self.image, self.settings)
        return ops.reshape(loss, (1,))


def _loss(y_true, y_pred):
    return y_pred


def transfer(
    backbone: keras.Model,
    content: Any,
    style: Any,
    settings: StyleSettings,
    *,
    init: Any | None = None,
    record_gradients: bool = False,
) -> StyleResult:
    """``zoo.style_transfer.transfer`` in Keras: ``backbone`` a Keras model of a family with named
    features (whatever ``features`` it was built with, it returns the layers the loss needs
    during the run); images (H, W, 3) RGB, uint8 or float in [0, 1]."""
    if isinstance(settings.optimizer, LBFGS):
        raise ValueError("Keras has no L-BFGS optimizer: use Adam (AdamW(weight_decay=0.0))")
    content, style, init = images(content, style, init)
    with returning_layers(backbone, settings):
        return _run(backbone, content, style, init, settings, record_gradients)


def _run(backbone, content, style, init, settings, record_gradients) -> StyleResult:
    targets = [
        features_of(backbone, ops.convert_to_tensor(x[None]), settings) for x in (content, style)
    ]
    content_feats = {n: ops.convert_to_numpy(targets[0][n]) for n in settings.content_layers}
    grams = {n: ops.convert_to_numpy(gram(targets[1][n])) for n in settings.style_layers}
    trainable = backbone.trainable
    try:
        return _fit(StyleImage(backbone, content_feats, grams, init, settings), record_gradients)
    finally:
        backbone.trainable = trainable


def _fit(model: StyleImage, record_gradients: bool) -> StyleResult:
    settings = model.settings
    spec = settings.optimizer
    model.compile(
        optimizer=RecordingAdam(spec.lr, *spec.betas, spec.eps, weight_decay=0.0),
        loss=_loss,
        metrics=[_LastLoss()],
    )
    losses, record = _StepLosses(), _Gradients(model.image)
    if settings.steps:  # one epoch of ``steps`` batches: an epoch costs far more than a batch
        model.fit(
            np.zeros((settings.steps, 1), np.float32),
            np.zeros((settings.steps, 1), np.float32),
            batch_size=1,
            epochs=1,
            shuffle=False,
            callbacks=[losses, *([record] if record_gradients else [])],
            verbose=0,
        )
    image = ops.convert_to_numpy(model.image)[0]
    return StyleResult(
        image.copy(),
        np.asarray(losses.losses, np.float64),
        record.gradients,
        np.asarray(losses.seconds),
    )
