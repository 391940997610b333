"""Keras optimizers that update as ``torch.optim`` does, from a ``zoo.training`` spec.

``keras_optimizer(spec)`` maps a spec to Keras (every backend): the built-in where one computes
PyTorch's update given the right arguments (``SGD`` without weight decay, ``Adadelta`` without
weight decay), otherwise one of the small subclasses below, written with ``keras.ops`` on the
public ``Optimizer`` extension points (``build``, ``update_step``, ``get_config``, as Keras's
``Optimizer`` docstring shows). Why each differs is in ``zoo.training``'s docstring.
"""

from __future__ import annotations

import keras
from keras import ops

from zoo import training

__all__ = ["AdadeltaL2", "AdamW", "SGDL2", "keras_optimizer"]


class _CoupledWeightDecay:
    """Adds ``l2 * variable`` to the gradient before the optimizer's own update: PyTorch's
    (coupled) ``weight_decay`` for SGD and Adadelta. Keras's ``weight_decay`` argument, which
    shrinks the variable outside the update, stays off."""

    def __init__(self, *args, l2: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        gradient = ops.cast(gradient, variable.dtype)
        if self.l2:
            l2 = ops.convert_to_tensor(self.l2, dtype=variable.dtype)
            gradient = ops.add(gradient, ops.multiply(variable, l2))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable(package="vit_zoo")
class SGDL2(_CoupledWeightDecay, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with PyTorch's coupled weight decay ``l2``."""


@keras.saving.register_keras_serializable(package="vit_zoo")
class AdadeltaL2(_CoupledWeightDecay, keras.optimizers.Adadelta):
    """``keras.optimizers.Adadelta`` with PyTorch's coupled weight decay ``l2``."""


@keras.saving.register_keras_serializable(package="vit_zoo")
class AdamW(keras.optimizers.Optimizer):
    """``torch.optim.AdamW``'s update: decoupled weight decay (Keras's ``weight_decay``, applied
    before the step as PyTorch does), then ``variable -= lr / (1 - beta_1^t) * m /
    (sqrt(v) / sqrt(1 - beta_2^t) + epsilon)``: epsilon on the bias-corrected root, where
    ``keras.optimizers.AdamW`` adds it to ``sqrt(v)``. PyTorch's defaults."""

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        weight_decay: float = 1e-2,
        name: str = "torch_adamw",
        **kwargs,
    ) -> None:
        super().__init__(
            learning_rate=learning_rate, weight_decay=weight_decay, name=name, **kwargs
        )
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def build(self, var_list) -> None:
        if self.built:
            return
        super().build(var_list)
        self.momentums, self.velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        # A gathered table's gradient on TensorFlow is IndexedSlices, one slice per lookup;
        # squared slice by slice, a row looked up twice would move 1.41 lr where PyTorch's Adam
        # moves it lr. Added to zeros, the slices are summed into PyTorch's dense gradient.
        gradient = ops.add(ops.zeros(variable.shape, dtype), ops.cast(gradient, dtype))
        step = ops.cast(self.iterations + 1, dtype)
        # (ops.cast of a Python float rounds it to float32 first on TensorFlow)
        beta_1 = ops.convert_to_tensor(self.beta_1, dtype=dtype)
        beta_2 = ops.convert_to_tensor(self.beta_2, dtype=dtype)
        m = self.momentums[self._get_variable_index(variable)]
        v = self.velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2))
        correction_1 = 1 - ops.power(beta_1, step)
        root_correction_2 = ops.sqrt(1 - ops.power(beta_2, step))
        epsilon = ops.convert_to_tensor(self.epsilon, dtype=dtype)
        denominator = ops.add(ops.divide(ops.sqrt(v), root_correction_2), epsilon)
        self.assign_sub(variable, ops.divide(ops.multiply(m, lr / correction_1), denominator))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
        }


def keras_optimizer(spec: training.OptimizerSpec) -> keras.optimizers.Optimizer:
    """The Keras optimizer whose updates are ``torch_optimizer(spec)``'s, every argument passed
    (Keras's defaults differ: ``zoo.training``)."""
    if isinstance(spec, training.SGD):
        args = {"learning_rate": spec.lr, "momentum": spec.momentum, "nesterov": spec.nesterov}
        if spec.weight_decay:
            return SGDL2(**args, l2=spec.weight_decay)
        return keras.optimizers.SGD(**args)
    if isinstance(spec, training.AdamW):
        beta_1, beta_2 = spec.betas
        return AdamW(spec.lr, beta_1, beta_2, spec.eps, spec.weight_decay)
    if isinstance(spec, training.Adadelta):
        args = {"learning_rate": spec.lr, "rho": spec.rho, "epsilon": spec.eps}
        if spec.weight_decay:
            return AdadeltaL2(**args, l2=spec.weight_decay)
        return keras.optimizers.Adadelta(**args)
    raise TypeError(f"not an optimizer spec: {spec!r}")
