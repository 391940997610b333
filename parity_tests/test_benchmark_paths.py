"""The training benchmark's paths (``scripts/benchmark_train.py``, smoke configs) run in each
implementation and compute in the precision ``--dtype`` asks for (``scripts/bench_device.py``):
the first step's loss (computed before any update, from the same seeded weights and data) in
mixed bfloat16 is near the float32 one but far from float32 rounding of it. A path that dropped
the dtype (no autocast, no Keras policy, no Flax compute dtype) gives the float32 loss again and
fails; so does one that trained on different weights or data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench_device import worker_env  # noqa: E402

MODELS = ["swin_t", "video_swin_t", "sam_mask_decoder"]
#: what CI runs of each port (each case compiles two steps, 5-20 s): the classifiers share one
#: path, the SAM decoder has its own; every model runs with -m slow
CI = {"flax": ("swin_t", "sam_mask_decoder"), "keras": ("swin_t",)}
#: float32 rounding of a mean cross-entropy / BCE is ~1e-7 relative; bfloat16's 8-bit mantissa
#: moves these tiny models' first loss by 1e-4 or more
ABOVE_FLOAT32 = 1e-5
#: and mixed precision stays near float32
NEAR = 5e-2


def _first_losses(impl: str, model: str) -> tuple[float, float]:
    from scripts.benchmark_train import train_fn

    losses = []
    for dtype in ("float32", "bfloat16"):
        step = train_fn(impl, model, smoke=True, dtype=dtype)
        losses.append(float(np.asarray(step())))
    return losses[0], losses[1]


def _check(impl: str, model: str) -> None:
    full, mixed = _first_losses(impl, model)
    gap = abs(mixed - full) / abs(full)
    print(f"{impl} {model}: float32 {full:.6f}, bfloat16 {mixed:.6f}, relative gap {gap:.1e}")
    assert np.isfinite(mixed) and gap > ABOVE_FLOAT32, (
        f"{impl} {model}: bfloat16 loss {mixed!r} vs float32 {full!r}: not bfloat16?"
    )
    assert gap < NEAR, f"{impl} {model}: bfloat16 loss {mixed} vs float32 {full} ({gap:.1e})"


def _models(port: str) -> list:
    return [
        pytest.param(m, marks=() if m in CI.get(port, MODELS) else pytest.mark.slow) for m in MODELS
    ]


@pytest.mark.parametrize("model", _models("reference"))
def test_reference_training_paths_compute_in_the_asked_dtype(model):
    _check("reference", model)


@pytest.mark.parametrize("model", _models("flax"))
def test_flax_training_paths_compute_in_the_asked_dtype(model):
    _check("flax", model)


@pytest.mark.keras
@pytest.mark.parametrize("model", _models("keras"))
def test_keras_training_paths_compute_in_the_asked_dtype(model):
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        pytest.skip("the benchmark has no Keras-on-torch path")
    before = keras.config.dtype_policy()
    try:
        _check(f"keras-{backend}", model)
    finally:
        keras.config.set_dtype_policy(before)


def test_worker_env_hides_the_gpu_on_cpu_and_turns_tf32_off():
    cpu = worker_env("cpu", {"PATH": "/bin"})
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["JAX_PLATFORMS"] == "cpu"
    gpu = worker_env("gpu", {"PATH": "/bin"})
    assert gpu["JAX_PLATFORMS"] == "cuda" and "CUDA_VISIBLE_DEVICES" not in gpu
    for env in (cpu, gpu):
        assert env["NVIDIA_TF32_OVERRIDE"] == "0"
        assert env["JAX_DEFAULT_MATMUL_PRECISION"] == "highest"
        assert env["PATH"] == "/bin"
    with pytest.raises(ValueError):
        worker_env("tpu", dict(os.environ))
