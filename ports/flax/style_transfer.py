"""Neural style transfer, Flax NNX: ``zoo.style``'s loss and settings, the pixels an ``nnx.Param``
of a one-variable module optimized by ``optax.adamw`` with no weight decay (PyTorch's Adam:
``ports.flax.training.optax_transform``), each step compiled with ``nnx.jit``; the backbone is
an argument of the step, not optimized (the gradient is taken with respect to the pixels only).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ports.flax.training import optax_transform
from zoo.style import LBFGS, StyleResult, StyleSettings, images, returning_layers

__all__ = ["Pixels", "features_of", "gram", "style_loss", "transfer"]


def _positions(f: jax.Array) -> jax.Array:
    """A channels-last feature as (B, M, N): positions x channels."""
    if f.ndim == 4:
        return f.reshape(f.shape[0], -1, f.shape[-1])
    if f.ndim == 3:
        return f
    raise ValueError(f"a feature of shape {tuple(f.shape)} is no map and no token sequence")


def gram(f: jax.Array) -> jax.Array:
    """``F F^T`` (B, N, N), unnormalized, of a map (B, H, W, C) or tokens (B, T, D)."""
    x = _positions(f)
    return jnp.matmul(x.transpose(0, 2, 1), x)


def features_of(backbone: nnx.Module, x: jax.Array, settings: StyleSettings) -> dict:
    """The backbone's features of the (B, H, W, 3) [0, 1] image ``x``, normalized as its
    weights expect."""
    order, a, b = settings.normalization_for(backbone.config).affine()
    return backbone(x[..., order] * a + b)


def style_loss(feats: dict, content: dict, style_grams: dict, image: jax.Array, settings):
    """``zoo.style``'s total loss (see ``zoo.style_transfer.style_loss``)."""
    total = jnp.zeros((), jnp.float32)
    if settings.content_layers:
        c = sum(0.5 * jnp.sum((feats[n] - content[n]) ** 2) for n in settings.content_layers)
        total = total + settings.content_weight * c
    if settings.style_layers:
        s = jnp.zeros((), jnp.float32)
        for name, w in zip(settings.style_layers, settings.layer_weights, strict=True):
            x = _positions(feats[name])
            m, n = x.shape[1], x.shape[2]
            d = jnp.sum((gram(feats[name]) - style_grams[name]) ** 2)
            s = s + w * d / (4.0 * n * n * m * m)
        total = total + settings.style_weight * s
    if settings.tv_weight:
        down = jnp.sum((image[:, 1:] - image[:, :-1]) ** 2)
        across = jnp.sum((image[:, :, 1:] - image[:, :, :-1]) ** 2)
        total = total + settings.tv_weight * (down + across)
    return total


class Pixels(nnx.Module):
    """The image being optimized: ``image`` (1, H, W, 3), an ``nnx.Param``."""

    def __init__(self, init: np.ndarray) -> None:
        self.image = nnx.Param(jnp.asarray(init[None]))


def transfer(
    backbone: nnx.Module,
    content: Any,
    style: Any,
    settings: StyleSettings,
    *,
    init: Any | None = None,
    record_gradients: bool = False,
) -> StyleResult:
    """``zoo.style_transfer.transfer`` in Flax: ``backbone`` a Flax model of a family with named
    features (whatever ``features`` it was built with, it returns the layers the loss needs
    during the run), run in inference mode; images (H, W, 3) RGB, uint8 or float in [0, 1]."""
    content, style, init = images(content, style, init)
    with returning_layers(backbone, settings):
        return _run(
            nnx.view(backbone, deterministic=True, raise_if_not_found=False),
            content,
            style,
            init,
            settings,
            record_gradients,
        )


def _run(backbone, content, style, init, settings, record_gradients) -> StyleResult:
    targets = [features_of(backbone, jnp.asarray(x[None]), settings) for x in (content, style)]
    content_feats = {n: targets[0][n] for n in settings.content_layers}
    grams = {n: gram(targets[1][n]) for n in settings.style_layers}
    if isinstance(settings.optimizer, LBFGS):
        return _run_lbfgs(backbone, content_feats, grams, init, settings, record_gradients)
    pixels = Pixels(init)
    optimizer = nnx.Optimizer(pixels, optax_transform(settings.optimizer), wrt=nnx.Param)

    @nnx.jit
    def step(pixels: Pixels, optimizer: nnx.Optimizer, backbone: nnx.Module):
        def loss_fn(pixels: Pixels) -> jax.Array:
            image = pixels.image[...]
            feats = features_of(backbone, image, settings)
            return style_loss(feats, content_feats, grams, image, settings)

        loss, grads = nnx.value_and_grad(loss_fn)(pixels)
        optimizer.update(pixels, grads)
        if settings.clip:
            pixels.image[...] = jnp.clip(pixels.image[...], 0.0, 1.0)
        return loss, grads.image[...]

    losses, gradients, seconds = [], [], []
    for _ in range(settings.steps):
        start = time.perf_counter()
        loss, grad = step(pixels, optimizer, backbone)
        losses.append(float(loss))  # waits for the step
        seconds.append(time.perf_counter() - start)
        if record_gradients:
            gradients.append(np.asarray(grad)[0].copy())
    image = np.asarray(pixels.image[...])[0].copy()
    return StyleResult(image, np.asarray(losses, np.float64), gradients, np.asarray(seconds))


def _run_lbfgs(backbone, content_feats, grams, init, settings, record_gradients) -> StyleResult:
    """``optax.lbfgs`` (zoom line search) on the image array, one iteration a step."""
    spec = settings.optimizer
    solver = optax.lbfgs(learning_rate=spec.lr, memory_size=spec.history_size)

    @nnx.jit
    def step(backbone: nnx.Module, image: jax.Array, state):
        def value(x: jax.Array) -> jax.Array:
            return style_loss(features_of(backbone, x, settings), content_feats, grams, x, settings)

        loss, grad = optax.value_and_grad_from_state(value)(image, state=state)
        updates, state = solver.update(grad, state, image, value=loss, grad=grad, value_fn=value)
        image = optax.apply_updates(image, updates)
        return (jnp.clip(image, 0.0, 1.0) if settings.clip else image), state, loss, grad

    image = jnp.asarray(init[None])
    state = solver.init(image)
    losses, gradients, seconds = [], [], []
    for _ in range(settings.steps):
        start = time.perf_counter()
        image, state, loss, grad = step(backbone, image, state)
        losses.append(float(loss))
        seconds.append(time.perf_counter() - start)
        if record_gradients:
            gradients.append(np.asarray(grad)[0].copy())
    return StyleResult(
        np.asarray(image)[0].copy(), np.asarray(losses, np.float64), gradients, np.asarray(seconds)
    )
