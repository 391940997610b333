"""Parity harness: run a reference module and its port on the same inputs with the same weights,
compare the outputs and every aligned submodule's output, and name the first submodule above
tolerance. Used by the tests, by ``weight-convert parity`` and by ``--verify``.

===================  ========================================================================
module               what
===================  ========================================================================
``report``           ``LayerError``, ``ParityReport`` (framework-free)
``formats``          which format a reference record is compared in (framework-free)
``comparison``       ``compare``, ``run_reference`` / ``ReferenceRun``, ``load_reference_weights``
``gradients``        ``compare_gradients``: the backward pass
``optimizer_steps``  ``compare_optimizer_steps``: parameters after optimizer steps
``runners``          ``run_case`` (block cases), ``run_config`` (any config), ``run_model``
``worker``           one ``weight-convert parity`` target in its own process
``cli``              the ``weight-convert parity`` command
===================  ========================================================================

Names are loaded on first use, so ``weight_convert.parity.cli`` (and ``weight-convert --help``)
imports no deep-learning framework.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BLOCK_GRAD_TOLERANCE",
    "BLOCK_TOLERANCE",
    "FLOAT64_GRAD_TOLERANCE",
    "FLOAT64_TOLERANCE",
    "MIXED_BFLOAT16",
    "MIXED_BFLOAT16_GRAD_TOLERANCE",
    "MIXED_BFLOAT16_MODEL_GRAD_TOLERANCE",
    "MIXED_BFLOAT16_TOLERANCE",
    "MODEL_GRAD_TOLERANCE",
    "MODEL_TOLERANCE",
    "LayerError",
    "ParityReport",
    "Recorder",
    "ReferenceRun",
    "Tolerance",
    "compare",
    "compare_gradients",
    "compare_optimizer_steps",
    "load_reference_weights",
    "run_case",
    "run_config",
    "run_model",
    "run_reference",
]

_HOMES = {
    "BLOCK_GRAD_TOLERANCE": "weight_convert.tolerance",
    "MODEL_GRAD_TOLERANCE": "weight_convert.tolerance",
    "FLOAT64_GRAD_TOLERANCE": "weight_convert.tolerance",
    "FLOAT64_TOLERANCE": "weight_convert.tolerance",
    "MIXED_BFLOAT16": "weight_convert.tolerance",
    "MIXED_BFLOAT16_GRAD_TOLERANCE": "weight_convert.tolerance",
    "MIXED_BFLOAT16_MODEL_GRAD_TOLERANCE": "weight_convert.tolerance",
    "MIXED_BFLOAT16_TOLERANCE": "weight_convert.tolerance",
    "compare_gradients": "weight_convert.parity.gradients",
    "compare_optimizer_steps": "weight_convert.parity.optimizer_steps",
    "BLOCK_TOLERANCE": "weight_convert.tolerance",
    "MODEL_TOLERANCE": "weight_convert.tolerance",
    "Tolerance": "weight_convert.tolerance",
    "LayerError": "weight_convert.parity.report",
    "ParityReport": "weight_convert.parity.report",
    "Recorder": "weight_convert.frameworks.recorder",
    "ReferenceRun": "weight_convert.parity.comparison",
    "compare": "weight_convert.parity.comparison",
    "load_reference_weights": "weight_convert.parity.comparison",
    "run_reference": "weight_convert.parity.comparison",
    "run_case": "weight_convert.parity.runners",
    "run_config": "weight_convert.parity.runners",
    "run_model": "weight_convert.parity.runners",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
