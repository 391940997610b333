"""Neural style transfer, PyTorch reference (``zoo.style`` has the definitions and settings):
the pixels are a leaf tensor optimized by ``torch.optim.Adam`` (``zoo.training.torch_optimizer``
of ``settings.optimizer``), the backbone a reference ``features`` model in eval mode, frozen.

``ports.keras.style_transfer`` and ``ports.flax.style_transfer`` run the same loss with the same
optimizer update; ``parity_tests/test_style_transfer.py`` holds the three to the same curve and
image.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.style import LBFGS, StyleResult, StyleSettings, images, returning_layers
from zoo.training import torch_optimizer

__all__ = ["features_of", "gram", "style_loss", "transfer"]


def _positions(f: torch.Tensor) -> torch.Tensor:
    """A feature as (B, N, M): channels x positions (a (B, C, H, W) map; (B, T, D) tokens)."""
    if f.ndim == 4:
        return f.flatten(2)
    if f.ndim == 3:
        return f.transpose(1, 2)
    raise ValueError(f"a feature of shape {tuple(f.shape)} is no map and no token sequence")


def gram(f: torch.Tensor) -> torch.Tensor:
    """``F F^T`` (B, N, N), unnormalized, of a map (B, C, H, W) or tokens (B, T, D)."""
    x = _positions(f)
    return x @ x.transpose(1, 2)


def features_of(backbone: nn.Module, x: torch.Tensor, settings: StyleSettings):
    """The backbone's features of the (B, H, W, 3) [0, 1] image ``x``: normalized as the
    backbone's weights expect, fed channels-first."""
    order, a, b = settings.normalization_for(backbone.config).affine()
    y = x[..., order.tolist()] * torch.from_numpy(a) + torch.from_numpy(b)
    return backbone(y.permute(0, 3, 1, 2))


def style_loss(
    feats: dict[str, torch.Tensor],
    content: dict[str, torch.Tensor],
    style_grams: dict[str, torch.Tensor],
    image: torch.Tensor,
    settings: StyleSettings,
) -> torch.Tensor:
    """``zoo.style``'s total loss of one image from its features ``feats``, the content image's
    ``content`` features and the style image's Gram matrices."""
    total = image.new_zeros(())
    if settings.content_layers:
        c = sum(0.5 * ((feats[n] - content[n]) ** 2).sum() for n in settings.content_layers)
        total = total + settings.content_weight * c
    if settings.style_layers:
        s = image.new_zeros(())
        for name, w in zip(settings.style_layers, settings.layer_weights, strict=True):
            x = _positions(feats[name])
            n, m = x.shape[1], x.shape[2]
            s = s + w * ((gram(feats[name]) - style_grams[name]) ** 2).sum() / (4.0 * n * n * m * m)
        total = total + settings.style_weight * s
    if settings.tv_weight:
        down = ((image[:, 1:] - image[:, :-1]) ** 2).sum()
        across = ((image[:, :, 1:] - image[:, :, :-1]) ** 2).sum()
        total = total + settings.tv_weight * (down + across)
    return total


def transfer(
    backbone: nn.Module,
    content: Any,
    style: Any,
    settings: StyleSettings,
    *,
    init: Any | None = None,
    record_gradients: bool = False,
) -> StyleResult:
    """``settings.steps`` Adam steps on the pixels, from ``init`` (default: the content image).
    ``backbone``: a reference model of a family with named features (whatever ``features`` it
    was built with, it returns the layers the loss needs during the run:
    ``zoo.style.returning_layers``); images (H, W, 3) RGB, uint8 or float in [0, 1]."""
    content, style, init = images(content, style, init)
    with returning_layers(backbone, settings):
        return _run(backbone.eval(), content, style, init, settings, record_gradients)


def _run(backbone, content, style, init, settings, record_gradients) -> StyleResult:
    for p in backbone.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        content_feats = features_of(backbone, torch.from_numpy(content[None]), settings)
        style_feats = features_of(backbone, torch.from_numpy(style[None]), settings)
        grams = {n: gram(style_feats[n]) for n in settings.style_layers}
    image = torch.from_numpy(init[None].copy()).requires_grad_(True)
    spec = settings.optimizer
    if isinstance(spec, LBFGS):
        optimizer = torch.optim.LBFGS(
            [image],
            lr=spec.lr,
            max_iter=1,
            history_size=spec.history_size,
            line_search_fn="strong_wolfe",
        )
    else:
        optimizer = torch_optimizer(spec, [image])
    losses, gradients, seconds = [], [], []
    for _ in range(settings.steps):
        start = time.perf_counter()
        first: list = []

        def closure(first: list = first) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = style_loss(
                features_of(backbone, image, settings), content_feats, grams, image, settings
            )
            loss.backward()
            if not first:  # the step's own loss and gradient (a line search evaluates more)
                first.append((float(loss.detach()), image.grad[0].numpy().copy()))
            return loss

        if isinstance(spec, LBFGS):
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        losses.append(first[0][0])
        if record_gradients:
            gradients.append(first[0][1])
        if settings.clip:
            with torch.no_grad():
                image.clamp_(0.0, 1.0)
        seconds.append(time.perf_counter() - start)
    return StyleResult(
        image.detach()[0].numpy().copy(),
        np.asarray(losses, np.float64),
        gradients,
        np.asarray(seconds),
    )
