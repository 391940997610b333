"""Adapter for the Keras 3 port (any backend): variables by path, assignment, call capture.

Keras variable paths are built from layer names; the ports name every sublayer after its
reference attribute and list items ``attr-i``. ``root/attn/qkv/kernel`` is port path
``attn.qkv.kernel``.

On the JAX backend ``call`` runs the model under ``jax.jit`` (``stateless_call``): JAX's eager
mode compiles every op for every new shape, which made one whole-model call take a minute. The
per-layer outputs ``capture`` records are returned from the compiled function as extra outputs,
so the layer-by-layer comparison is the same as in eager mode.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import keras
import numpy as np

import ports.keras.layers
from zoo import compat
from zoo.blocks import Ref

NAME = f"keras-{keras.backend.backend()}"

#: The records list of the active ``capture`` (JAX backend: filled by ``call``), else None.
_recording: list[tuple[str, Any]] | None = None


def resolve_refs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    ns = ports.keras.layers
    return {k: getattr(ns, v.name) if isinstance(v, Ref) else v for k, v in kwargs.items()}


def build(block: str, kwargs: Mapping[str, Any]) -> keras.Layer:
    return getattr(ports.keras.layers, block)(**resolve_refs(kwargs), name="root")


def create(name: str, **overrides) -> keras.Model:
    """The registered variant ``name`` (``zoo.configs.VARIANTS``), built, variables created."""
    import ports.keras.models

    return ports.keras.models.create_model(name, **overrides)


def _port_path(keras_path: str, root: keras.Layer) -> str:
    head, _, rest = keras_path.partition("/")
    if head != root.name:
        raise ValueError(f"{keras_path!r} is not under the root layer {root.name!r}")
    return rest.replace("/", ".").replace("-", ".")


def materialize(module: keras.Layer, inputs: list[np.ndarray]) -> None:
    """Create the variables (Keras builds layers on their first call)."""
    if not module.built or not module.weights:
        module(*inputs)


def variables(module: keras.Layer) -> dict[str, keras.Variable]:
    out = {}
    for v in module.weights:
        path = _port_path(v.path, module)
        if path in out:
            raise KeyError(f"two variables at {path}")
        out[path] = v
    return out


def shapes(module: keras.Layer) -> dict[str, tuple[int, ...]]:
    return {p: tuple(v.shape) for p, v in variables(module).items()}


def read(module: keras.Layer) -> dict[str, np.ndarray]:
    return {p: keras.ops.convert_to_numpy(v.value) for p, v in variables(module).items()}


def assign(module: keras.Layer, values: Mapping[str, np.ndarray]) -> None:
    targets = variables(module)
    for path, value in values.items():
        targets[path].assign(np.asarray(value, dtype=targets[path].dtype))


def call(
    module: keras.Layer, inputs: list[np.ndarray], training: bool = False
) -> np.ndarray | list[np.ndarray]:
    """The output as numpy; a list of arrays when the module returns several (features)."""
    if keras.backend.backend() == "jax" and not training:
        out = _jax_jit_call(module, inputs)
    else:
        out = module(*inputs, training=training)
    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in out]
    return keras.ops.convert_to_numpy(out)


def _jax_jit_call(module: keras.Layer, inputs: list[np.ndarray]) -> Any:
    """Inference under ``jax.jit``; the active capture's records (traced while compiling) come
    back as extra outputs and are stored as numpy."""
    import jax

    records = _recording
    paths: list[str] = []
    # stateless_call hands its keywords to the root's ``call`` as they are
    kwargs = {"training": False} if "training" in inspect.signature(module.call).parameters else {}

    def run(trainable, non_trainable, *xs):
        start = len(records) if records is not None else 0
        out, _ = module.stateless_call(trainable, non_trainable, *xs, **kwargs)
        traced = []
        if records is not None:
            traced = records[start:]
            del records[start:]
            paths.extend(p for p, _ in traced)
        return out, [t for _, t in traced]

    out, recorded = jax.jit(run)(
        [v.value for v in module.trainable_variables],
        [v.value for v in module.non_trainable_variables],
        *[jax.numpy.asarray(x) for x in inputs],
    )
    if records is not None:
        records.extend((p, np.asarray(r)) for p, r in zip(paths, recorded, strict=True))
    return out


@contextlib.contextmanager
def capture(module: keras.Layer) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Record (path, output) of every sublayer call, in the order calls finish
    (``zoo.compat.keras_intercept_calls``; nothing is recorded where it cannot intercept)."""
    global _recording
    records: list[tuple[str, np.ndarray]] = []
    traced = keras.backend.backend() == "jax"  # outputs are tracers; ``call`` fetches them
    layers = []
    for layer in compat.keras_sublayers(module):
        if layer.path is None:  # built outside its parent's scope: no path to align by
            continue

        path = _port_path(layer.path, module)

        def record(out, _path=path):
            if not isinstance(out, (tuple, list, dict)):
                value = out if traced else keras.ops.convert_to_numpy(out).copy()
                records.append((_path, value))

        layers.append((layer, record))
    with compat.keras_intercept_calls(layers):
        _recording = records
        try:
            yield records
        finally:
            _recording = None


def settings() -> dict[str, str]:
    out = {"keras": keras.__version__, "keras.backend": keras.backend.backend()}
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        out["tf.tensor_float_32"] = str(tf.config.experimental.tensor_float_32_execution_enabled())
    elif backend == "jax":
        import jax

        out["jax_default_matmul_precision"] = str(jax.config.jax_default_matmul_precision)
    elif backend == "torch":
        import torch

        out["torch.float32_matmul_precision"] = torch.get_float32_matmul_precision()
    return out


def numerics():
    """Full fp32 matmuls for the duration, where the backend has a switch for it."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_matmul_precision("float32")
    if backend == "torch":
        from weight_convert.frameworks.reference import numerics as torch_numerics

        return torch_numerics()
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- streamed files


def abstract_model(config) -> keras.Model:
    """The model ``config`` describes, built inside a ``keras.StatelessScope`` that leaves its
    variables uninitialized: they have paths, shapes and dtypes but no values (no memory), for
    ``save_streamed``."""
    from ports.keras.models import build_model

    with keras.StatelessScope(initialize_variables=False):
        return build_model(config)


def save_streamed(
    model: keras.Model,
    weights_path,
    keras_path,
    value_of: Callable[[str], np.ndarray],
    concrete: Callable[[], keras.Model],
) -> int:
    """Write ``model``'s ``.weights.h5`` and ``.keras`` files with every variable's value taken
    from ``value_of(port path)`` as Keras' saver reaches it, so only one value is in memory at a
    time and the model itself needs none (``abstract_model``). Values are written in their own
    dtype (bfloat16 as Keras marks it). The ``.keras`` archive is the one ``model.save`` writes:
    ``metadata.json``, ``config.json`` and the same ``model.weights.h5``. Returns the number of
    variables written. ``concrete()`` builds the same model with values, for the public fallback
    of ``zoo.compat.keras_save_streamed`` (Keras versions its saver internals were not tested
    with)."""
    return compat.keras_save_streamed(
        model,
        weights_path,
        keras_path,
        lambda variable: value_of(_port_path(variable.path, model)),
        concrete,
    )
