"""DF-GAN's training losses, the reference (PyTorch), as ``tobran/DF-GAN``'s
``code/lib/modules.py`` computes them in ``train``: the discriminator's hinge loss on real,
mismatched (each image's features with the next sentence: the batch rolled by one) and fake
images, the matching-aware gradient penalty ``MA_GP`` and the generator's loss. The Keras
(``ports.keras.dfgan_training``) and Flax (``ports.flax.dfgan_training``) versions compute the
same numbers from the same weights, noise and batch.

``MA_GP``: the gradient of ``netC(netD(img), sent)`` (its sum: ``grad_outputs`` of ones) with
respect to both the image and the sentence embedding, flattened and concatenated per sample,
its L2 norm ``n``; the penalty is ``2 * mean(n ** 6)``. It is part of ``errD``, so the
discriminator's gradient is a second-order one (``create_graph=True``).
"""

from __future__ import annotations

import torch

from zoo.families.dfgan import MAGP_POWER, MAGP_WEIGHT, discriminator_record

__all__ = [
    "MAGP_POWER",
    "MAGP_WEIGHT",
    "discriminator_losses",
    "generator_loss",
    "hinge_loss",
    "ma_gp",
    "penalty",
]


def hinge_loss(output: torch.Tensor, negative: bool) -> torch.Tensor:
    """``mean(relu(1 - output))`` for real pairs, ``mean(relu(1 + output))`` for negatives."""
    return torch.relu(1.0 + output).mean() if negative else torch.relu(1.0 - output).mean()


def ma_gp(img: torch.Tensor, sent: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The official ``MA_GP(img, sent, out)``: ``out`` computed from ``img`` and ``sent``
    (both requiring gradients); differentiable (the graph of the gradient is kept)."""
    grads = torch.autograd.grad(
        outputs=out,
        inputs=(img, sent),
        grad_outputs=torch.ones_like(out),
        retain_graph=True,
        create_graph=True,
        only_inputs=True,
    )
    return penalty(*grads)


def penalty(grad_img: torch.Tensor, grad_sent: torch.Tensor) -> torch.Tensor:
    """``2 * mean(n ** 6)``, n: the per-sample L2 norm of both gradients concatenated."""
    grad = torch.cat([g.reshape(g.size(0), -1) for g in (grad_img, grad_sent)], dim=1)
    norm = torch.sqrt(torch.sum(grad**2, dim=1))
    return MAGP_WEIGHT * torch.mean(norm**MAGP_POWER)


def discriminator_losses(
    model, imgs: torch.Tensor, sent: torch.Tensor, noise: torch.Tensor
) -> dict[str, torch.Tensor]:
    """One discriminator step's terms, as ``train`` computes them (``model``: ``DFGAN``; imgs
    (B, C, S, S) real images, sent (B, cond_dim), noise (B, nz): drawn by the caller).

    Returns ``real``, ``mismatched``, ``fake``, ``ma_gp`` and ``errD = real + (fake +
    mismatched) / 2 + ma_gp``, plus ``fake_images`` (netG's, for the generator step) and
    ``grad_img`` / ``grad_sent`` (MA-GP's input gradients)."""
    imgs = imgs.detach().requires_grad_()
    sent = sent.detach().requires_grad_()
    net_d, net_c = model.netD, model.netC
    real_features = net_d(imgs)
    pred_real = net_c(real_features, sent)
    err_real = hinge_loss(pred_real, negative=False)
    mis_features = torch.cat((real_features[1:], real_features[0:1]), dim=0)
    err_mis = hinge_loss(net_c(mis_features, sent), negative=True)
    fake = model.netG(noise, sent)
    err_fake = hinge_loss(net_c(net_d(fake.detach()), sent), negative=True)
    grad_img, grad_sent = torch.autograd.grad(
        pred_real, (imgs, sent), torch.ones_like(pred_real), retain_graph=True, create_graph=True
    )
    err_gp = penalty(grad_img, grad_sent)  # ma_gp(imgs, sent, pred_real), the gradients kept
    return discriminator_record(err_real, err_mis, err_fake, err_gp, fake, grad_img, grad_sent)


def generator_loss(model, fake: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
    """``errG = -mean(netC(netD(fake), sent))`` (the fake images not detached)."""
    return -model.netC(model.netD(fake), sent).mean()
