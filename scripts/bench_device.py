"""Where and in what precision the benchmarks run (``--device``, ``--dtype`` of
``scripts/benchmark.py``, forward and ``--train``), the same way in every framework.

- ``--device cpu`` (default): each worker process sees no GPU (``CUDA_VISIBLE_DEVICES`` empty,
  ``JAX_PLATFORMS=cpu``), so a machine with one measures its CPU. ``--device gpu``: PyTorch
  moves module and data to ``cuda`` and waits for the GPU (``torch.cuda.synchronize``) before a
  call counts as done; JAX runs on ``cuda`` (``JAX_PLATFORMS``) and every call already blocks on
  its result; TensorFlow places on the GPU by itself.
- ``--dtype float32`` (default) is float32 arithmetic everywhere, TF32 off in every framework:
  ``NVIDIA_TF32_OVERRIDE=0`` (cuBLAS and cuDNN, whichever framework calls them), PyTorch's
  ``allow_tf32`` flags off for matrix products and cuDNN convolutions (the latter is on by
  default), ``JAX_DEFAULT_MATMUL_PRECISION=highest`` (XLA's own GPU kernels take TF32 at JAX's
  default precision). On the CPU these change nothing.
- ``--dtype bfloat16`` is mixed precision as each framework's users write it: parameters and
  inputs float32, computation bfloat16 where the framework's rules put it. PyTorch:
  ``torch.autocast(device, torch.bfloat16)`` around the forward (and the loss); Keras: the
  ``mixed_bfloat16`` dtype policy before the model is built; Flax: the port's layers built with
  ``dtype=jnp.bfloat16`` (``ports.flax.layers.variables.set_compute_dtype``). These are the
  paths ``parity_tests/test_mixed_precision.py`` holds to its bounds.

No framework is imported here until a function that needs it is called.
"""

from __future__ import annotations

import contextlib
from typing import Any

DEVICES = ("cpu", "gpu")
DTYPES = ("float32", "bfloat16")
#: Keras dtype policy per ``--dtype``
KERAS_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def worker_env(device: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` plus the variables a worker process for ``device`` needs, set before any framework
    is imported (JAX and TensorFlow read them then)."""
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {DEVICES}")
    env = dict(env, NVIDIA_TF32_OVERRIDE="0", JAX_DEFAULT_MATMUL_PRECISION="highest")
    if device == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    else:
        env.update(JAX_PLATFORMS="cuda")
    return env


def torch_device(device: str):
    """PyTorch's device for ``device``; on ``cuda`` with TF32 off for matrix products and cuDNN."""
    import torch

    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("--device gpu: PyTorch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch.device("cuda")


def require_gpu(framework: str) -> None:
    """For ``--device gpu``: exit with one line if ``framework`` ("jax" or "tensorflow") would
    run on the CPU instead (a CPU-only build, no driver)."""
    if framework == "jax":
        import jax

        try:  # JAX_PLATFORMS=cuda without the CUDA plugin fails inside JAX (an assertion)
            backend = jax.default_backend()
        except Exception:  # noqa: BLE001
            backend = None
        if backend != "gpu":
            raise SystemExit("--device gpu: JAX sees no GPU (no jax[cuda] plugin?)")
    elif framework == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            raise SystemExit("--device gpu: TensorFlow sees no GPU")


def torch_autocast(dev, dtype: str):
    """``torch.autocast`` to bfloat16 on ``dev`` for ``"bfloat16"``, nothing for float32."""
    import torch

    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16)


def torch_sync(dev) -> None:
    """Wait for the GPU's queued work (PyTorch returns from a call before it is done there)."""
    if dev.type == "cuda":
        import torch

        torch.cuda.synchronize(dev)


def flax_compute_dtype(dtype: str) -> Any:
    """The ``dtype`` argument of ``ports.flax.models.create_model`` for ``dtype``."""
    if dtype == "float32":
        return None
    import jax.numpy as jnp

    return jnp.bfloat16


def describe(device: str) -> str:
    """The device's name for the table's header (this process may see the GPU: the parent's
    environment is not the workers')."""
    import torch

    if device == "cpu":
        return f"{torch.get_num_threads()} CPU threads"
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "GPU (not seen)"
