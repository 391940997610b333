"""Fine-tuning recipes, Flax NNX: an ``nnx.Optimizer`` loop with ``optax.sgd`` (momentum), each
step compiled with ``nnx.jit``; the ports' version of ``zoo.finetune``.

``finetune_classifier`` trains a classifier (Video Swin, Swin) on labelled clips or images;
``finetune_mask_decoder`` trains SAM's mask decoder alone (``sam.mask_decoder``: NNX modules are
updated in place, so the ``Sam`` model holds the result). ``optax.sgd(lr, momentum)`` keeps
``t = g + momentum * t`` and adds ``-lr * t``: ``torch.optim.SGD``'s update.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from zoo.sam_transforms import DECODER_INPUTS

__all__ = ["finetune_classifier", "finetune_mask_decoder"]


@nnx.jit
def _classifier_step(
    model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array
) -> jax.Array:
    def loss_fn(model: nnx.Module) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def finetune_classifier(
    model: nnx.Module,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    steps: int,
    lr: float,
    momentum: float,
) -> list[float]:
    """``steps`` steps of SGD with momentum on the cross-entropy of the logits, each on the next
    ``batch_size`` items of ``inputs`` (N, T, H, W, C) or (N, H, W, C) channels-last, in order,
    from the start again after the last (N a multiple of ``batch_size``); ``labels`` (N,)
    integers. Returns the loss of each step."""
    if len(inputs) % batch_size:
        raise ValueError(f"{len(inputs)} items are no multiple of the batch size {batch_size}")
    model.train()
    optimizer = nnx.Optimizer(model, optax.sgd(lr, momentum=momentum), wrt=nnx.Param)
    losses = []
    for step in range(steps):
        start = step * batch_size % len(inputs)
        x = jnp.asarray(inputs[start : start + batch_size])
        y = jnp.asarray(labels[start : start + batch_size])
        losses.append(float(_classifier_step(model, optimizer, x, y)))
    return losses


@nnx.jit
def _decoder_step(
    decoder: nnx.Module, optimizer: nnx.Optimizer, inputs: list[jax.Array], target: jax.Array
) -> jax.Array:
    def loss_fn(decoder: nnx.Module) -> jax.Array:
        masks, _ = decoder(*inputs, multimask_output=False)
        return optax.sigmoid_binary_cross_entropy(masks, target).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(decoder)
    optimizer.update(decoder, grads)
    return loss


def finetune_mask_decoder(
    decoder: nnx.Module,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    lr: float,
    momentum: float,
) -> list[float]:
    """SGD with momentum on SAM's mask decoder (``sam.mask_decoder``; nothing else moves): per
    batch (``DECODER_INPUTS`` and ``"masks"`` (B, 4H, 4W, 1) in {0, 1}, channels-last), binary
    cross-entropy on the single-mask logits, averaged over every pixel. Returns the loss of each
    step."""
    decoder.train()
    optimizer = nnx.Optimizer(decoder, optax.sgd(lr, momentum=momentum), wrt=nnx.Param)
    losses = []
    for batch in batches:
        inputs = [jnp.asarray(batch[k]) for k in DECODER_INPUTS]
        target = jnp.asarray(batch["masks"])
        losses.append(float(_decoder_step(decoder, optimizer, inputs, target)))
    return losses
