"""Optimizer-step parity: from the same weights, the same inputs and the same loss (the
gradient comparison's ``sum_i <output_i, c_i>``), run ``steps`` optimizer steps in the reference
(``torch.optim``) and in a port (Keras ``optimizer.apply_gradients``, Flax ``nnx.Optimizer``
with optax), each framework computing its own gradients, all from one ``zoo.training`` spec;
compare the parameters after every step.

What is compared is each parameter's movement from its initial value: the port's ``p_t - p_0``
against the reference's, per tensor, so ``max_rel`` is the error relative to how far the
reference moved that tensor (an error relative to the weights would be hidden by weights that
barely move). The report has one row per parameter and step, named ``key @ step t``: the
last step's rows are its ``outputs``, the earlier ones its ``layers``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from weight_convert.frameworks import reference as ref_fw
from weight_convert.parity.comparison import load_reference_weights, port_inputs
from weight_convert.parity.gradients import Cotangents, _reference_layout
from weight_convert.parity.report import ParityReport, layer_error
from weight_convert.tolerance import Tolerance
from zoo.tensor_format import Format

__all__ = ["compare_optimizer_steps"]


def compare_optimizer_steps(
    reference,
    port,
    adapter,
    inputs: Sequence[np.ndarray],
    formats: Sequence[Format],
    *,
    spec: Any,
    steps: int,
    tolerance: Callable[[int], Tolerance],
    seed: int = 0,
    name: str = "",
    group: str = "",
    port_optimizer: Any = None,
    after_transfer: Callable[[Any], None] | None = None,
) -> ParityReport:
    """Give ``port`` the reference's weights, run ``steps`` steps of ``spec`` in both and hold
    every parameter's movement after step ``t`` to ``tolerance(t)`` (``max_rel``: error / max
    |reference movement|). ``port_optimizer`` replaces the port's optimizer built from ``spec``
    (Keras: a ``keras.optimizers.Optimizer``, to measure a built-in); ``after_transfer(port)``
    may alter the port first (planted bugs)."""
    ported = port_inputs(inputs, formats, name)
    load_reference_weights(adapter, port, reference, ported)
    if after_transfer is not None:
        after_transfer(port)
    initial = {k: v.astype(np.float64) for k, v in ref_fw.state_dict(reference).items()}
    floating = [x.dtype for x in inputs if np.issubdtype(x.dtype, np.floating)]
    dtype = np.result_type(*floating) if floating else np.float32
    cots = Cotangents(seed, ref_fw.declared_formats(reference)[""], dtype)
    with ref_fw.numerics():
        ref_after = ref_fw.optimizer_steps(reference, list(inputs), cots.reference, spec, steps)
    with adapter.numerics():
        port_after = adapter.optimizer_steps(
            port, list(ported), cots.port, spec if port_optimizer is None else port_optimizer, steps
        )
    rows = []
    for t, (want, have) in enumerate(zip(ref_after, port_after, strict=True), start=1):
        got = _reference_layout(have, list(want))
        for key, value in want.items():
            moved = value.astype(np.float64) - initial[key]
            port_moved = got[key].astype(np.float64) - initial[key]
            rows.append(layer_error(f"{key} @ step {t}", 0, moved, port_moved, tolerance(t)))
    last = len(rows) - len(ref_after[-1])  # the final parameters are the report's outputs
    optimizer = type(port_optimizer).__name__ if port_optimizer is not None else repr(spec)
    return ParityReport(
        name=f"{name} ({steps} optimizer steps)" if name else f"{steps} optimizer steps",
        framework=adapter.NAME,
        outputs=rows[last:],
        layers=rows[:last],
        settings={
            "dtype": str(np.dtype(dtype)),
            "optimizer": optimizer,
            **ref_fw.settings(),
            **adapter.settings(),
            "loss": "sum <outputs, random c>",
            "compared": "movement from the initial weights",
        },
        group=group,
    )
