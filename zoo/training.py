"""Optimizers in PyTorch's terms, framework-free: one spec, the same update in every framework.

A spec is a frozen dataclass named after its ``torch.optim`` class, with that class's argument
names and defaults. Each framework builds its optimizer from it in its own package:
``torch_optimizer(spec, params)`` here (torch imported on call), ``keras_optimizer(spec)`` in
``ports.keras.training``, ``optax_transform(spec)`` / ``nnx_optimizer(model, spec)`` in
``ports.flax.training``. The mapping (checked against the libraries' sources: torch 2.14
``torch/optim/{sgd,adam,adadelta}.py``, Keras 3.15 ``keras/src/optimizers/{sgd,adam,adadelta,
base_optimizer}.py``, optax 0.2.8 ``optax/_src/{alias,transform}.py``):

- ``SGD(lr, momentum, nesterov, weight_decay)``: torch ``b = momentum * b + g; p -= lr * b``
  (``b = g`` on the first step; nesterov ``p -= lr * (g + momentum * b)``). Keras's ``SGD``
  keeps ``m = -lr * b`` (``m = momentum * m - lr * g; p += m``), the same update for a constant
  learning rate; optax's ``sgd`` is ``trace(decay=momentum, nesterov)`` then ``-lr``, torch's
  formula. Weight decay in torch is coupled (L2: ``g += weight_decay * p`` before momentum);
  Keras's ``weight_decay`` argument is decoupled (``p -= lr * weight_decay * p``, outside the
  momentum), a different update once momentum is on, so the Keras port adds the L2 term to the
  gradient (``ports.keras.training.SGDL2``); optax: ``add_decayed_weights`` before ``sgd``.
  Dampening is not offered: neither Keras nor optax has it.
- ``AdamW(lr, betas, eps, weight_decay)``: torch ``p *= 1 - lr * wd``, then
  ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``: epsilon is added to the
  bias-corrected root. optax's ``adamw`` is the same (``m_hat / (sqrt(v_hat) + eps)`` plus
  ``wd * p``, times ``-lr``). Keras's ``Adam``/``AdamW`` add epsilon to the uncorrected root
  (``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``), i.e. torch's formula with
  ``eps * sqrt(1 - b2^t)``, a factor that changes every step, so no constant ``epsilon`` makes
  the built-in equal torch's: the Keras port uses ``ports.keras.training.AdamW``, torch's
  formula written with ``keras.ops`` (Keras's decoupled ``weight_decay`` is torch's, applied
  before the step as torch does).
- ``Adadelta(lr, rho, eps, weight_decay)``: the three libraries compute the same update
  (``sqrt(u + eps) / sqrt(v + eps) * g``, accumulators with ``rho``) once rho and eps are
  passed; the weight decay is coupled in torch and optax, decoupled in Keras (the port adds the
  L2 term: ``ports.keras.training.AdadeltaL2``).

Defaults that differ, so every argument is always passed explicitly:

| | PyTorch | Keras | optax |
| --- | --- | --- | --- |
| SGD lr | 1e-3 | 1e-2 | (required) |
| AdamW weight_decay | 1e-2 | 4e-3 | 1e-4 |
| Adam(W) eps | 1e-8, on sqrt(v_hat) | 1e-7, on sqrt(v) | 1e-8, on sqrt(v_hat) |
| Adadelta lr / rho / eps | 1.0 / 0.9 / 1e-6 | 1e-3 / 0.95 / 1e-7 | (required) / 0.9 / 1e-6 |
| weight decay (SGD, Adadelta) | coupled (L2) | decoupled | coupled (``add_decayed_weights``) |
| BatchNorm momentum / eps | 0.1 / 1e-5 | 0.99 / 1e-3 | 0.99 / 1e-5 |

BatchNorm's momentum conventions are inverse: Keras and Flax keep ``moving = momentum * moving
+ (1 - momentum) * batch``, PyTorch ``running = (1 - momentum) * running + momentum * batch``;
``batchnorm_arguments`` maps them. PyTorch's running variance takes the unbiased batch variance
(``n / (n - 1)`` times the one it normalizes with), Keras's and Flax's the biased one: the
moving variances differ by ``momentum * var / (n - 1)`` per update (n = values per channel),
which no argument changes (the training-mode outputs and the moving means are equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "SGD",
    "Adadelta",
    "AdamW",
    "OptimizerSpec",
    "batchnorm_arguments",
    "torch_optimizer",
]


@dataclass(frozen=True)
class SGD:
    """``torch.optim.SGD(lr, momentum, dampening=0, weight_decay, nesterov)``; the weight decay
    is coupled (L2 added to the gradient)."""

    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclass(frozen=True)
class AdamW:
    """``torch.optim.AdamW(lr, betas, eps, weight_decay)``: decoupled weight decay, epsilon
    added to the bias-corrected root."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-2


@dataclass(frozen=True)
class Adadelta:
    """``torch.optim.Adadelta(lr, rho, eps, weight_decay)``; the weight decay is coupled."""

    lr: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6
    weight_decay: float = 0.0


OptimizerSpec = SGD | AdamW | Adadelta


def torch_optimizer(spec: OptimizerSpec, params: Any):
    """The ``torch.optim`` optimizer ``spec`` names, over ``params`` (what ``torch.optim``
    accepts), every argument passed (dampening 0, no amsgrad)."""
    import torch

    if isinstance(spec, SGD):
        return torch.optim.SGD(
            params,
            lr=spec.lr,
            momentum=spec.momentum,
            dampening=0.0,
            weight_decay=spec.weight_decay,
            nesterov=spec.nesterov,
        )
    if isinstance(spec, AdamW):
        return torch.optim.AdamW(
            params,
            lr=spec.lr,
            betas=spec.betas,
            eps=spec.eps,
            weight_decay=spec.weight_decay,
            amsgrad=False,
        )
    if isinstance(spec, Adadelta):
        return torch.optim.Adadelta(
            params, lr=spec.lr, rho=spec.rho, eps=spec.eps, weight_decay=spec.weight_decay
        )
    raise TypeError(f"not an optimizer spec: {spec!r}")


def batchnorm_arguments(momentum: float = 0.1, eps: float = 1e-5) -> dict[str, float]:
    """``torch.nn.BatchNorm*d(momentum, eps)``'s arguments for ``keras.layers.BatchNormalization``
    and ``flax.nnx.BatchNorm`` (same keywords in both): ``momentum`` is ``1 - momentum``,
    ``epsilon`` is ``eps`` (Keras's default is 1e-3)."""
    return {"momentum": 1.0 - momentum, "epsilon": eps}
