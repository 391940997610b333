"""DF-GAN's training losses in Flax NNX: ``zoo.dfgan_training``'s numbers from the Flax
``DFGAN`` (channels-last images). MA-GP's input gradient is ``jax.vjp`` of
``netC(netD(img), sent)`` with a cotangent of ones (the official ``grad_outputs``); the
discriminator's gradient goes through it (``nnx.grad`` of a loss that takes a ``jax.vjp``:
second order). Both steps are jit-friendly (``nnx.jit`` them as a training loop would).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.families.dfgan import MAGP_POWER, MAGP_WEIGHT, discriminator_record

__all__ = [
    "discriminator_gradients",
    "discriminator_losses",
    "generator_gradients",
    "generator_loss",
    "hinge_loss",
    "penalty",
]


def hinge_loss(output: jax.Array, negative: bool) -> jax.Array:
    """``mean(relu(1 - output))`` for real pairs, ``mean(relu(1 + output))`` for negatives."""
    return jnp.mean(jax.nn.relu(1.0 + output if negative else 1.0 - output))


def penalty(grad_img: jax.Array, grad_sent: jax.Array) -> jax.Array:
    """``2 * mean(n ** 6)``, n: the per-sample L2 norm of both gradients concatenated."""
    b = grad_sent.shape[0]
    grad = jnp.concatenate([grad_img.reshape(b, -1), grad_sent.reshape(b, -1)], axis=1)
    return MAGP_WEIGHT * jnp.mean(jnp.sqrt(jnp.sum(grad**2, axis=1)) ** MAGP_POWER)


def discriminator_losses(model, imgs, sent, noise) -> dict[str, jax.Array]:
    """``zoo.dfgan_training.discriminator_losses`` for the Flax ``DFGAN`` (imgs (B, S, S, C))."""
    imgs, sent, noise = (jnp.asarray(x, jnp.float32) for x in (imgs, sent, noise))

    def predict(i: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array]:
        features = model.netD(i)
        return model.netC(features, s), features

    pred_real, vjp, real_features = jax.vjp(predict, imgs, sent, has_aux=True)
    grad_img, grad_sent = vjp(jnp.ones_like(pred_real))
    err_real = hinge_loss(pred_real, negative=False)
    rolled = jnp.concatenate([real_features[1:], real_features[:1]], axis=0)
    err_mis = hinge_loss(model.netC(rolled, sent), negative=True)
    fake = model.netG(noise, sent)
    err_fake = hinge_loss(model.netC(model.netD(jax.lax.stop_gradient(fake)), sent), True)
    err_gp = penalty(grad_img, grad_sent)
    return discriminator_record(err_real, err_mis, err_fake, err_gp, fake, grad_img, grad_sent)


def generator_loss(model, fake: jax.Array, sent: jax.Array) -> jax.Array:
    """``errG = -mean(netC(netD(fake), sent))``."""
    return -jnp.mean(model.netC(model.netD(fake), sent))


@nnx.jit
def discriminator_gradients(model, imgs, sent, noise):
    """(``discriminator_losses``, ``nnx.State`` of errD's gradients for every parameter; netG's
    are zero: its images are detached). Compiled (``nnx.jit``)."""

    def loss(m):
        terms = discriminator_losses(m, imgs, sent, noise)
        return terms["errD"], terms

    grads, terms = nnx.grad(loss, has_aux=True)(model)
    return terms, grads


@nnx.jit
def generator_gradients(model, sent, noise):
    """(errG, ``nnx.State`` of its gradients for every parameter; only netG's are used).
    Compiled (``nnx.jit``)."""
    sent, noise = jnp.asarray(sent, jnp.float32), jnp.asarray(noise, jnp.float32)

    def loss(m):
        err = generator_loss(m, m.netG(noise, sent), sent)
        return err, err

    grads, err = nnx.grad(loss, has_aux=True)(model)
    return err, grads
