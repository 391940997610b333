"""optax transformations that update as ``torch.optim`` does, from a ``zoo.training`` spec.

optax's ``sgd`` (``trace``), ``adamw`` and ``adadelta`` compute PyTorch's updates once every
argument is passed (``zoo.training`` gives the mapping and the defaults that differ); PyTorch's
coupled SGD weight decay is ``add_decayed_weights`` chained before ``sgd``.
"""

from __future__ import annotations

import optax
from flax import nnx

from zoo import training

__all__ = ["nnx_optimizer", "optax_transform"]


def optax_transform(spec: training.OptimizerSpec) -> optax.GradientTransformation:
    """The optax transformation whose updates are ``torch_optimizer(spec)``'s."""
    if isinstance(spec, training.SGD):
        sgd = optax.sgd(spec.lr, momentum=spec.momentum or None, nesterov=spec.nesterov)
        if spec.weight_decay:
            return optax.chain(optax.add_decayed_weights(spec.weight_decay), sgd)
        return sgd
    if isinstance(spec, training.AdamW):
        beta_1, beta_2 = spec.betas
        return optax.adamw(
            spec.lr, b1=beta_1, b2=beta_2, eps=spec.eps, weight_decay=spec.weight_decay
        )
    if isinstance(spec, training.Adadelta):
        return optax.adadelta(spec.lr, rho=spec.rho, eps=spec.eps, weight_decay=spec.weight_decay)
    raise TypeError(f"not an optimizer spec: {spec!r}")


def nnx_optimizer(model: nnx.Module, spec: training.OptimizerSpec) -> nnx.Optimizer:
    """``nnx.Optimizer`` over ``model``'s ``nnx.Param``s (buffers are never trained) with
    ``optax_transform(spec)``."""
    return nnx.Optimizer(model, optax_transform(spec), wrt=nnx.Param)
