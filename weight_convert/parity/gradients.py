"""Backward parity: the gradients of one scalar loss with respect to the inputs and to every
parameter, in the reference (autograd) and in a port (Keras: ``tf.GradientTape``, ``jax.grad`` of
``stateless_call`` or autograd, by backend; Flax: ``nnx.grad``), from the same weights.

The loss is ``sum_i <output_i, c_i>`` with fixed random cotangents ``c_i`` (a plain sum would
hide whatever a normalization makes sum to zero), so its gradients are the vector-Jacobian
product of the outputs with ``c``. Parameter gradients are aligned as the weights are: each port
variable's gradient goes through the weight transfer's rules (``weight_convert.rules``) to the
reference's key and layout, and every reference parameter must find exactly one. The report is
a ``ParityReport``: ``layers`` one row per parameter gradient (named by its reference key, in
``named_parameters`` order), ``outputs`` one row per floating input's gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from weight_convert import transfer
from weight_convert.frameworks import reference as ref_fw
from weight_convert.parity.comparison import load_reference_weights, port_inputs
from weight_convert.parity.formats import fitting_format
from weight_convert.parity.report import LayerError, ParityReport, layer_error
from weight_convert.tolerance import BLOCK_GRAD_TOLERANCE, Tolerance
from zoo.tensor_format import Format, to_port_format

__all__ = ["Cotangents", "compare_gradients"]


class Cotangents:
    """The loss's fixed random cotangents, drawn on demand for each reference output
    (``reference(i, shape)``, standard normal), and the same values in the port's format
    (``port(i, port shape)``: the format the forward comparison would find, declared or the one
    under which the shapes fit). ``declared``: every output's declared format, or a list of
    one per output (``reference.output_formats``)."""

    def __init__(
        self, seed: int, declared: Format | None | list[Format | None], dtype: Any = np.float32
    ) -> None:
        self._rng = np.random.default_rng(seed + 7919)
        self._declared, self._dtype = declared, np.dtype(dtype)
        self.drawn: list[np.ndarray] = []

    def reference(self, i: int, shape: tuple[int, ...]) -> np.ndarray:
        while len(self.drawn) <= i:
            self.drawn.append(None)  # type: ignore[arg-type]
        if self.drawn[i] is None:
            self.drawn[i] = self._rng.standard_normal(shape).astype(self._dtype)
        return self.drawn[i]

    def port(self, i: int, shape: tuple[int, ...]) -> np.ndarray:
        if i >= len(self.drawn) or self.drawn[i] is None:
            raise ValueError(f"the port gives output {i}, which the reference does not")
        ref = self.drawn[i]
        declared = self._declared[i] if isinstance(self._declared, list) else self._declared
        return to_port_format(ref, fitting_format(ref.shape, shape, declared))


def _reference_layout(port_grads: dict[str, np.ndarray], expected: Sequence[str]) -> dict:
    """Port gradients by reference key, in the reference's layout (a gradient has its
    variable's layout: ``transfer.to_torch``); strict coverage."""
    out = transfer.to_torch(port_grads)
    missing = [k for k in expected if k not in out]
    extra = [k for k in out if k not in set(expected)]
    if missing or extra:
        raise ValueError(
            f"parameter gradients do not correspond: reference only {missing[:5]}, "
            f"port only {extra[:5]}"
        )
    return out


def compare_gradients(
    reference,
    port,
    adapter,
    inputs: Sequence[np.ndarray],
    formats: Sequence[Format],
    *,
    tolerance: Tolerance = BLOCK_GRAD_TOLERANCE,
    seed: int = 0,
    name: str = "",
    group: str = "",
    after_transfer: Callable[[Any], None] | None = None,
    transfer_weights: bool = True,
    training: bool = False,
) -> ParityReport:
    """Give ``port`` the reference's weights (unless ``transfer_weights`` is False), then compare
    the gradients of ``sum_i <output_i, c_i>`` (``cotangents(outputs, seed)``) with respect to
    each floating input and every parameter. ``after_transfer(port)`` may alter the port first
    (planted bugs). ``training``: both in training mode (with every stochastic rate at 0)."""
    ported = port_inputs(inputs, formats, name)
    if transfer_weights:
        load_reference_weights(adapter, port, reference, ported)
    if after_transfer is not None:
        after_transfer(port)
    floating = [x.dtype for x in inputs if np.issubdtype(x.dtype, np.floating)]
    dtype = np.result_type(*floating) if floating else np.float32  # float64 runs: float64
    names = getattr(getattr(reference, "config", None), "features", ())
    declared = (
        ref_fw.output_formats(reference, len(names)) if names else ref_fw.declared_format(reference)
    )
    cots = Cotangents(seed, declared, dtype)
    with ref_fw.numerics():
        ref_inputs, ref_params = ref_fw.gradients(
            reference, list(inputs), cots.reference, training=training
        )
    with adapter.numerics():
        port_input_grads, port_params = adapter.gradients(
            port, list(ported), cots.port, training=training
        )
    got = _reference_layout(port_params, list(ref_params))
    scale = max((float(np.max(np.abs(g), initial=0.0)) for g in ref_params.values()), default=0.0)
    layers = [layer_error(k, 0, g, got[k], tolerance, scale) for k, g in ref_params.items()]
    outputs: list[LayerError] = []
    for i, (want, have, fmt) in enumerate(zip(ref_inputs, port_input_grads, formats, strict=True)):
        if want is None:
            continue
        expected = to_port_format(want, fmt)
        if have is None or have.shape != expected.shape:
            raise ValueError(f"{name}: the port gives no gradient of the shape of input {i}")
        label = f"<input {i} gradient>"
        outputs.append(layer_error(label, 0, expected, have, tolerance, scale))
    settings = {
        "dtype": str(np.dtype(dtype)),
        **ref_fw.settings(),
        **adapter.settings(),
        "loss": "sum <outputs, random c>",
        **({"mode": "training"} if training else {}),
    }
    return ParityReport(
        name=f"{name} (gradients)" if name else "gradients",
        framework=adapter.NAME,
        outputs=outputs,
        layers=layers,
        settings=settings,
        group=group,
    )
