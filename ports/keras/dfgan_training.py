"""DF-GAN's training losses in Keras 3 (every backend): ``zoo.dfgan_training``'s numbers from
the Keras ``DFGAN`` (channels-last images).

The matching-aware gradient penalty needs the gradient of ``netC(netD(img), sent)`` with respect
to the inputs, and the discriminator's gradient goes through it (second order). ``keras.ops``
has no gradient, so each backend's own autodiff computes it: ``tf.GradientTape`` (nested for the
second order) on TensorFlow, ``jax.vjp`` / ``jax.grad`` on JAX (the variables' values swapped
in through ``keras.StatelessScope``), ``torch.autograd.grad(create_graph=True)`` on torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

from zoo.families.dfgan import MAGP_POWER, MAGP_WEIGHT, discriminator_record

__all__ = [
    "discriminator_gradients",
    "discriminator_losses",
    "generator_gradients",
    "generator_loss",
    "hinge_loss",
    "penalty",
]

Tensor = Any


def hinge_loss(output: Tensor, negative: bool) -> Tensor:
    """``mean(relu(1 - output))`` for real pairs, ``mean(relu(1 + output))`` for negatives."""
    return ops.mean(ops.relu(1.0 + output)) if negative else ops.mean(ops.relu(1.0 - output))


def penalty(grad_img: Tensor, grad_sent: Tensor) -> Tensor:
    """``2 * mean(n ** 6)``, n: the per-sample L2 norm of both gradients concatenated (the
    image's flattened in the reference's (C, H, W) order: the norm does not depend on it)."""
    b = ops.shape(grad_sent)[0]
    grad = ops.concatenate([ops.reshape(grad_img, (b, -1)), ops.reshape(grad_sent, (b, -1))], 1)
    norm = ops.sqrt(ops.sum(grad**2, axis=1))
    return MAGP_WEIGHT * ops.mean(norm**MAGP_POWER)


def _input_gradients(fn: Callable[[Tensor, Tensor], tuple[Tensor, Any]], img: Tensor, sent: Tensor):
    """``(out, aux) = fn(img, sent)`` and the gradient of ``out``'s sum with respect to both
    inputs, kept differentiable (an outer gradient goes through it): (out, aux, grads)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch([img, sent])
            out, aux = fn(img, sent)
        return out, aux, tape.gradient(out, [img, sent])  # of the sum: grad_outputs of ones
    if backend == "jax":
        import jax

        out, vjp, aux = jax.vjp(fn, img, sent, has_aux=True)
        return out, aux, list(vjp(ops.ones_like(out)))
    if backend == "torch":
        import torch

        out, aux = fn(img, sent)
        grads = torch.autograd.grad(out, [img, sent], torch.ones_like(out), create_graph=True)
        return out, aux, list(grads)
    raise NotImplementedError(f"Keras backend {backend!r}: no gradient with respect to inputs")


def _leaf(x: Any, dtype: str = "float32") -> Tensor:
    """An input the gradients are taken with respect to (torch: a leaf requiring grad)."""
    x = ops.convert_to_tensor(x, dtype=dtype)
    if keras.backend.backend() == "torch":
        x = x.detach().requires_grad_(True)
    return x


def discriminator_losses(model, imgs: Any, sent: Any, noise: Any) -> dict[str, Tensor]:
    """``zoo.dfgan_training.discriminator_losses`` for the Keras ``DFGAN`` (imgs (B, S, S, C))."""
    imgs, sent, noise = _leaf(imgs), _leaf(sent), ops.convert_to_tensor(noise, "float32")
    net_d, net_c = model.netD, model.netC

    def predict(i: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        features = net_d(i)
        return net_c(features, s), features

    pred_real, real_features, (grad_img, grad_sent) = _input_gradients(predict, imgs, sent)
    err_real = hinge_loss(pred_real, negative=False)
    rolled = ops.concatenate([real_features[1:], real_features[:1]], axis=0)
    err_mis = hinge_loss(net_c(rolled, sent), negative=True)
    fake = model.netG(noise, sent)
    err_fake = hinge_loss(net_c(net_d(ops.stop_gradient(fake)), sent), negative=True)
    err_gp = penalty(grad_img, grad_sent)
    return discriminator_record(err_real, err_mis, err_fake, err_gp, fake, grad_img, grad_sent)


def generator_loss(model, fake: Tensor, sent: Tensor) -> Tensor:
    """``errG = -mean(netC(netD(fake), sent))``."""
    return -ops.mean(model.netC(model.netD(fake), sent))


def _zeros_for_unused(variables, grads, zeros) -> list:
    """A variable the loss does not reach (netD's unused ``conv_s``) gets zeros."""
    return [zeros(v.shape) if g is None else g for v, g in zip(variables, grads, strict=True)]


def _gradients(loss: Callable[[], tuple[Tensor, dict]], variables: Sequence[keras.Variable]):
    """(aux, gradients of the scalar ``loss()[0]`` with respect to ``variables``) on this
    backend (``loss()`` runs once; it may take gradients itself)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value, aux = loss()
        grads = tape.gradient(value, list(variables))
        return aux, _zeros_for_unused(variables, grads, ops.zeros)
    if backend == "jax":
        import jax

        def stateless(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return loss()

        step = jax.jit(jax.grad(stateless, has_aux=True))  # one compile, not op by op
        grads, aux = step([v.value for v in variables])
        return aux, grads
    if backend == "torch":
        import torch

        with torch.enable_grad():
            value, aux = loss()
            grads = torch.autograd.grad(value, [v.value for v in variables], allow_unused=True)
        return aux, _zeros_for_unused(variables, grads, lambda shape: torch.zeros(shape))
    raise NotImplementedError(f"Keras backend {backend!r}")


def discriminator_gradients(model, imgs: Any, sent: Any, noise: Any):
    """(``discriminator_losses``, gradients of ``errD`` for ``netD`` and ``netC``'s trainable
    variables, in their order: through MA-GP, a second-order gradient)."""
    variables = [*model.netD.trainable_variables, *model.netC.trainable_variables]

    def loss():
        terms = discriminator_losses(model, imgs, sent, noise)
        return terms["errD"], terms

    return _gradients(loss, variables)


def generator_gradients(model, sent: Any, noise: Any):
    """(errG, its gradients for ``netG``'s trainable variables, in their order): the generator
    step, ``netG(noise, sent)`` scored by ``netD`` / ``netC``."""
    sent, noise = ops.convert_to_tensor(sent, "float32"), ops.convert_to_tensor(noise, "float32")

    def loss():
        err = generator_loss(model, model.netG(noise, sent), sent)
        return err, err

    return _gradients(loss, model.netG.trainable_variables)
