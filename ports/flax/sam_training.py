"""Training SAM on synthetic scenes, Flax NNX: an ``nnx.Optimizer`` loop, each step compiled
with ``nnx.jit``, over the recipe of ``zoo.sam_training`` (the loss, the batches, the
learning-rate schedule are described there).

The optimizer is ``ports.flax.training.optax_transform`` of the recipe's spec at learning rate
1, chained with ``optax.scale_by_schedule`` over the recipe's per-step rates: PyTorch's Adam
with the rate set before each step (weight decay is 0 in the recipe).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ports.flax.training import optax_transform
from zoo.sam_training import ShapesRecipe, make_batch
from zoo.tensor_format import Format, to_port_format

__all__ = ["eager_step", "optimizer", "port_batch", "predict", "shapes_loss", "train", "train_step"]


def shapes_loss(
    masks: jax.Array, iou_pred: jax.Array, targets: jax.Array, recipe: ShapesRecipe
) -> jax.Array:
    """The recipe's loss: ``masks`` (N, R, h, w, M + 1) low-res logits of every prompt (points
    first), ``iou_pred`` (N, R, M + 1), ``targets`` (N, R, h, w) in {0, 1}."""
    masks = jnp.transpose(masks, (0, 1, 4, 2, 3))
    target = jnp.broadcast_to(targets[:, :, None].astype(masks.dtype), masks.shape)
    bce = optax.sigmoid_binary_cross_entropy(masks, target).mean(axis=(3, 4))
    prob = jax.nn.sigmoid(masks)
    inter = (prob * target).sum(axis=(3, 4))
    dice = 1 - (2 * inter + 1) / (prob.sum(axis=(3, 4)) + target.sum(axis=(3, 4)) + 1)
    mask_loss = bce + recipe.dice_weight * dice
    hard, truth = masks > 0, target > 0.5
    union = jnp.maximum((hard | truth).sum(axis=(3, 4)), 1)
    iou_true = jax.lax.stop_gradient((hard & truth).sum(axis=(3, 4)) / union)
    iou_loss = (iou_pred - iou_true) ** 2
    p = recipe.points
    multi = mask_loss[:, :p, 1:]
    best = jax.lax.stop_gradient(jax.nn.one_hot(multi.argmin(axis=-1), multi.shape[-1]))
    point = (multi * best).sum(axis=-1) + recipe.iou_weight * iou_loss[:, :p, 1:].mean(axis=-1)
    box = mask_loss[:, p:, 0] + recipe.iou_weight * iou_loss[:, p:, 0]
    return jnp.concatenate([point, box], axis=1).mean()


def predict(sam: nnx.Module, batch: Mapping[str, jax.Array], recipe: ShapesRecipe):
    """Every prompt's four low-res masks (N, P + B, 4g, 4g, M + 1) and IoU scores (N, P + B,
    M + 1) for a port batch (images channels-last)."""
    embeddings = sam.image_encoder(batch["images"])
    image_pe = sam.prompt_encoder.get_dense_pe()
    masks, ious = [], []
    for i in range(recipe.images):
        sparse_p, dense_p = sam.prompt_encoder(
            (batch["point_coords"][i], batch["point_labels"][i]), None, None
        )
        sparse_b, dense_b = sam.prompt_encoder(None, batch["boxes"][i], None)
        m, iou = sam.mask_decoder.predict_masks(
            embeddings[i : i + 1],
            image_pe,
            jnp.concatenate([sparse_p, sparse_b]),
            jnp.concatenate([dense_p, dense_b]),
        )
        masks.append(m)
        ious.append(iou)
    return jnp.stack(masks), jnp.stack(ious)


def eager_step(
    sam: nnx.Module, optimizer: nnx.Optimizer, batch: dict, recipe: ShapesRecipe
) -> jax.Array:
    """One step, uncompiled (op by op): the loss before the update."""

    def loss_fn(sam: nnx.Module) -> jax.Array:
        masks, ious = predict(sam, batch, recipe)
        return shapes_loss(masks, ious, batch["targets"], recipe)

    loss, grads = nnx.value_and_grad(loss_fn)(sam)
    optimizer.update(sam, grads)
    return loss


#: one step compiled with ``nnx.jit`` (once per recipe and batch shapes)
train_step = nnx.jit(eager_step, static_argnames="recipe")


def port_batch(batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """A ``make_batch`` batch as JAX arrays, the images channels-last."""
    out = {k: jnp.asarray(v) for k, v in batch.items()}
    out["images"] = jnp.asarray(to_port_format(batch["images"], Format.CHANNELS_FIRST))
    return out


def optimizer(sam: nnx.Module, recipe: ShapesRecipe) -> nnx.Optimizer:
    """The recipe's optimizer over ``sam``'s ``nnx.Param``s, the rate following the schedule."""
    rates = jnp.asarray(recipe.learning_rates(), jnp.float32)
    unit = optax_transform(dataclasses.replace(recipe.optimizer, lr=1.0))
    tx = optax.chain(unit, optax.scale_by_schedule(lambda count: rates[count]))
    return nnx.Optimizer(sam, tx, wrt=nnx.Param)


def train(
    sam: nnx.Module,
    recipe: ShapesRecipe,
    seed: int,
    log: Callable[[int, float, float], None] | None = None,
    jit: bool = True,
) -> list[float]:
    """Train ``sam`` in place with the recipe on the batches of ``seed``; returns every step's
    loss (before that step's update). ``jit=False`` runs the steps op by op (no compilation:
    cheaper for a handful of steps)."""
    step_fn = train_step if jit else eager_step
    opt = optimizer(sam, recipe)
    sam.train()
    losses, start = [], time.perf_counter()
    for step in range(recipe.steps):
        batch = port_batch(make_batch(sam.config, recipe, seed, step))
        losses.append(float(step_fn(sam, opt, batch, recipe)))
        if log is not None:
            log(step, losses[-1], time.perf_counter() - start)
    sam.eval()
    return losses
