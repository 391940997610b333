"""Statistical checks of the stochastic layers, shared by the tests: dropout is element-wise
(every entry zero or its inference value / keep), drop path is per sample (every sample zero or
scaled as a whole), and the kept fraction is within a binomial margin of keep."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["SIGMAS", "binomial_margin", "check_elementwise", "check_kept", "check_per_sample"]

#: the statistical margin: a kept fraction farther than this many binomial standard deviations
#: from keep fails (a correct layer fails 5-sigma about once in 1.7 million draws; the tests
#: draw from fixed seeds, so a pass or a failure repeats)
SIGMAS = 5.0


def binomial_margin(n: int, keep: float, sigmas: float = SIGMAS) -> float:
    """``sigmas`` standard deviations of the kept fraction of ``n`` Bernoulli(``keep``) draws."""
    return sigmas * math.sqrt(keep * (1.0 - keep) / n)


def check_kept(kept: int, n: int, keep: float, what: str = "kept fraction") -> float:
    """``kept`` of ``n`` within ``binomial_margin(n, keep)`` of ``keep``; returns the fraction."""
    fraction = kept / n
    margin = binomial_margin(n, keep)
    assert abs(fraction - keep) <= margin, f"{what} {fraction:.4f}, expected {keep} +- {margin:.4f}"
    return fraction


def check_elementwise(out: np.ndarray, clean: np.ndarray, keep: float) -> float:
    """Element-wise dropout: every entry of the training-mode ``out`` is 0 or the inference
    output's entry divided by ``keep`` (rtol 1e-6: the roundings of a division or two), and the
    kept fraction is within the binomial margin of ``keep``. ``clean`` has no zero entry (so a
    zero is a drop). Returns the kept fraction."""
    assert out.shape == clean.shape and np.all(clean != 0)
    kept = out != 0
    np.testing.assert_allclose(out[kept], clean[kept] / keep, rtol=1e-6, atol=0)
    return check_kept(int(kept.sum()), kept.size, keep)


def check_per_sample(out: np.ndarray, x: np.ndarray, keep: float) -> float:
    """Per-sample drop path on ``x`` (B, ...) with no zero entry: each sample of ``out`` is all
    zeros or ``x / keep`` (rtol 1e-6), and the fraction of samples kept is within the binomial
    margin of ``keep``. Returns that fraction."""
    kept = 0
    for o, xi in zip(out, x, strict=True):
        if np.all(o == 0):
            continue
        np.testing.assert_allclose(o, xi / keep, rtol=1e-6)
        kept += 1
    return check_kept(kept, len(x), keep, "fraction of samples kept")


def with_rates(config: Any, rate: float) -> Any:
    """``config`` with every stochastic rate (the config fields named ``*drop*``: dropout,
    attention dropout, drop path, head dropout) set to ``rate``."""
    fields = [f.name for f in dataclasses.fields(config) if "drop" in f.name]
    return dataclasses.replace(config, **dict.fromkeys(fields, rate))


def without_randomness(config: Any) -> Any:
    """``config`` with every stochastic rate at 0: training mode then computes what inference
    mode does."""
    return with_rates(config, 0.0)
