"""Training SAM on synthetic scenes, Keras 3 (any backend): ``model.fit`` over the recipe of
``zoo.sam_training`` (the loss, the batches, the learning-rate schedule are described there).

``ShapesTrainer`` wraps a ``Sam`` as a ``keras.Model`` whose input is a batch's prompts and
images and whose ``compute_loss`` is the recipe's loss; ``fit`` trains it one batch per epoch
(``epochs=steps, steps_per_epoch=1``, so each step's loss is logged exactly and the learning
rate is set before each step by ``LearningRateScheduler``), with ``ports.keras.training``'s
``AdamW`` (PyTorch's update). Training the wrapper trains the ``Sam``'s own variables.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import keras
import numpy as np
from keras import ops

from ports.keras.finetune import StepLosses
from ports.keras.training import keras_optimizer
from zoo.sam_training import ShapesRecipe, make_batch
from zoo.tensor_format import Format, to_port_format

__all__ = ["ShapesTrainer", "fit", "port_batch", "shapes_loss"]

INPUTS = ("images", "point_coords", "point_labels", "boxes")


def port_batch(batch: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A ``make_batch`` batch as the port takes it: the images channels-last; the targets
    (N, P + B, 4g, 4g) as they are."""
    x = {k: batch[k] for k in INPUTS}
    x["images"] = to_port_format(batch["images"], Format.CHANNELS_FIRST)
    return x, batch["targets"]


def shapes_loss(masks, iou_pred, targets, recipe: ShapesRecipe):
    """The recipe's loss: ``masks`` (N, R, h, w, M + 1) low-res logits of every prompt (points
    first), ``iou_pred`` (N, R, M + 1), ``targets`` (N, R, h, w) in {0, 1}."""
    masks = ops.transpose(masks, (0, 1, 4, 2, 3))
    target = ops.broadcast_to(ops.expand_dims(ops.cast(targets, masks.dtype), 2), masks.shape)
    bce = ops.relu(masks) - masks * target + ops.log1p(ops.exp(-ops.abs(masks)))
    bce = ops.mean(bce, axis=(3, 4))
    prob = ops.sigmoid(masks)
    inter = ops.sum(prob * target, axis=(3, 4))
    dice = 1 - (2 * inter + 1) / (ops.sum(prob, axis=(3, 4)) + ops.sum(target, axis=(3, 4)) + 1)
    mask_loss = bce + recipe.dice_weight * dice
    hard, truth = masks > 0, target > 0.5
    inter_hard = ops.sum(ops.cast(ops.logical_and(hard, truth), masks.dtype), axis=(3, 4))
    union = ops.sum(ops.cast(ops.logical_or(hard, truth), masks.dtype), axis=(3, 4))
    iou_true = ops.stop_gradient(inter_hard / ops.maximum(union, 1))
    iou_loss = ops.square(iou_pred - iou_true)
    p = recipe.points
    multi = mask_loss[:, :p, 1:]
    best = ops.stop_gradient(ops.one_hot(ops.argmin(multi, axis=-1), multi.shape[-1]))
    point = ops.sum(multi * ops.cast(best, multi.dtype), axis=-1)
    point = point + recipe.iou_weight * ops.mean(iou_loss[:, :p, 1:], axis=-1)
    box = mask_loss[:, p:, 0] + recipe.iou_weight * iou_loss[:, p:, 0]
    return ops.mean(ops.concatenate([point, box], axis=1))


class ShapesTrainer(keras.Model):
    """``sam`` (a ``ports.keras.models.Sam``) under the recipe: call(batch inputs: ``images``
    (N, S, S, 3), ``point_coords`` (N, P, 1, 2), ``point_labels`` (N, P, 1), ``boxes`` (N, B,
    4)) -> every prompt's four low-res masks (N, P + B, 4g, 4g, M + 1) and IoU scores (N, P + B,
    M + 1); ``compute_loss`` is ``shapes_loss``."""

    def __init__(self, sam: keras.Model, recipe: ShapesRecipe, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sam = sam
        self.recipe = recipe

    def call(self, inputs: Mapping, training: bool | None = None):
        sam = self.sam
        embeddings = sam.image_encoder(inputs["images"])
        image_pe = sam.prompt_encoder.get_dense_pe()
        masks, ious = [], []
        for i in range(self.recipe.images):  # static: the batch may be unknown while tracing
            sparse_p, dense_p = sam.prompt_encoder(
                (inputs["point_coords"][i], inputs["point_labels"][i]), None, None
            )
            sparse_b, dense_b = sam.prompt_encoder(None, inputs["boxes"][i], None)
            m, iou = sam.mask_decoder.predict_masks(
                embeddings[i : i + 1],
                image_pe,
                ops.concatenate([sparse_p, sparse_b]),
                ops.concatenate([dense_p, dense_b]),
            )
            masks.append(m)
            ious.append(iou)
        return ops.stack(masks), ops.stack(ious)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return shapes_loss(y_pred[0], y_pred[1], y, self.recipe)


class _Batches(keras.utils.PyDataset):
    """Batch ``i`` of the run is ``make_batch(config, recipe, seed, i)``."""

    def __init__(self, config, recipe: ShapesRecipe, seed: int) -> None:
        super().__init__()
        self.config, self.recipe, self.seed = config, recipe, seed

    def __len__(self) -> int:
        return self.recipe.steps

    def __getitem__(self, i: int):
        return port_batch(make_batch(self.config, self.recipe, self.seed, i))


class _Log(StepLosses):
    """``StepLosses`` that also reports each step to ``log(step, loss, seconds)``."""

    def __init__(self, log: Callable[[int, float, float], None] | None) -> None:
        super().__init__()
        self.log, self.start = log, time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.log is not None:
            step = len(self.losses) - 1
            self.log(step, self.losses[-1], time.perf_counter() - self.start)


def fit(
    sam: keras.Model,
    recipe: ShapesRecipe,
    seed: int,
    log: Callable[[int, float, float], None] | None = None,
    jit_compile: bool | str = "auto",
) -> list[float]:
    """Train ``sam`` in place with the recipe on the batches of ``seed``; returns every step's
    loss (before that step's update). ``jit_compile`` is ``Model.compile``'s (``False``: no
    XLA on TensorFlow, op by op on JAX: cheaper for a handful of steps)."""
    rates = recipe.learning_rates()
    trainer = ShapesTrainer(sam, recipe)
    trainer.compile(optimizer=keras_optimizer(recipe.optimizer), jit_compile=jit_compile)
    losses = _Log(log)
    # no prompt of the recipe is a mask: the mask-prompt branch gets no gradient (PyTorch leaves
    # it as it is, and so does Keras once frozen; otherwise it warns of missing gradients)
    frozen = [layer for layer in sam.prompt_encoder.mask_downscaling if layer.trainable]
    for layer in frozen:
        layer.trainable = False
    try:
        trainer.fit(
            _Batches(sam.config, recipe, seed),
            epochs=recipe.steps,
            steps_per_epoch=1,
            shuffle=False,
            callbacks=[
                keras.callbacks.LearningRateScheduler(lambda epoch: float(rates[epoch])),
                losses,
            ],
            verbose=0,
        )
    finally:
        for layer in frozen:
            layer.trainable = True
    return losses.losses
