"""Adapter for the Flax NNX port: parameters by path, assignment, call capture.

``nnx`` state paths are attribute paths: ``('blocks', 0, 'attn', 'qkv', 'kernel')`` is port path
``blocks.0.attn.qkv.kernel``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import ports.flax.layers
from ports.flax.layers.variables import CHECKPOINT_VARIABLES
from zoo import compat
from zoo.blocks import Ref

NAME = "flax"

#: (records, {id(submodule): path}) of the active ``capture`` (``call`` fills them), else None.
_recording: tuple[list[tuple[str, Any]], dict[int, str]] | None = None


def resolve_refs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    ns = ports.flax.layers
    return {k: getattr(ns, v.name) if isinstance(v, Ref) else v for k, v in kwargs.items()}


def build(block: str, kwargs: Mapping[str, Any], seed: int = 0) -> nnx.Module:
    module = getattr(ports.flax.layers, block)(**resolve_refs(kwargs), rngs=nnx.Rngs(seed))
    module.eval()
    return module


def materialize(module: nnx.Module, inputs: list[np.ndarray]) -> None:
    """NNX modules create their parameters at construction."""


def _join(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def variables(module: nnx.Module) -> dict[str, nnx.Variable]:
    """Every variable a checkpoint holds (parameters and ``Buffer``s), by dotted path."""
    return {_join(p): v for p, v in nnx.iter_graph(module) if isinstance(v, CHECKPOINT_VARIABLES)}


def shapes(module: nnx.Module) -> dict[str, tuple[int, ...]]:
    return {p: tuple(v.get_value().shape) for p, v in variables(module).items()}


def read(module: nnx.Module) -> dict[str, np.ndarray]:
    return {p: np.asarray(v.get_value()) for p, v in variables(module).items()}


def assign(module: nnx.Module, values: Mapping[str, np.ndarray]) -> None:
    targets = variables(module)
    for path, value in values.items():
        target = targets[path]
        target.set_value(jnp.asarray(value, dtype=target.get_value().dtype))


def create(name: str, **overrides) -> nnx.Module:
    """A registered model variant (``zoo.configs.VARIANTS``) in eval mode."""
    from ports.flax.models import create_model

    return create_model(name, **overrides)


def _to_numpy(out: Any) -> np.ndarray | list[np.ndarray]:
    if isinstance(out, (list, tuple)):
        return [np.asarray(t) for t in out]
    return np.asarray(out)


def call(module: nnx.Module, inputs: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """Run eagerly; a model returning several arrays gives a list.

    Inside ``capture`` the module runs compiled instead (``nnx.jit``; eager JAX compiles every op
    for every new shape, which made large models slow): the recorded layer outputs, traced while
    compiling, come back as extra results of the compiled function.
    """
    arrays = [jnp.asarray(x) for x in inputs]
    if _recording is None:
        return _to_numpy(module(*arrays))
    records, recorded_paths = _recording
    paths: list[str] = []

    def run(m: nnx.Module, *xs: jax.Array):
        # nnx.jit hands ``run`` a copy of the module tree: record its submodules by path too
        recorded_paths.update(
            {id(n): _join(p) for p, n in nnx.iter_graph(m) if p and isinstance(n, nnx.Module)}
        )
        start = len(records)
        out = m(*xs)
        traced = records[start:]
        del records[start:]
        paths.extend(p for p, _ in traced)
        return out, [t for _, t in traced]

    # a new function each call: nnx.jit's cache would skip the tracing that records the layers
    out, recorded = nnx.jit(run)(module, *arrays)
    records.extend((p, np.asarray(r)) for p, r in zip(paths, recorded, strict=True))
    return _to_numpy(out)


@nnx.jit
def _jitted(module: nnx.Module, *inputs: jax.Array) -> Any:
    return module(*inputs)


def jit_call(module: nnx.Module, inputs: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """Run under ``nnx.jit`` (compiled once per module structure and input shapes); numpy out
    as ``call``."""
    return _to_numpy(_jitted(module, *[jnp.asarray(x) for x in inputs]))


@contextlib.contextmanager
def capture(module: nnx.Module) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Record (path, output) of every submodule call, in the order calls finish
    (``zoo.compat.flax_intercept_calls``; nothing is recorded where it cannot intercept)."""
    global _recording
    records: list[tuple[str, np.ndarray]] = []
    nodes = [(p, node) for p, node in nnx.iter_graph(module) if p and isinstance(node, nnx.Module)]
    paths = {id(node): _join(p) for p, node in nodes}

    def record(node: nnx.Module, out: Any) -> None:
        # ``paths`` also gets the copies ``call`` compiles; outputs are tracers then (it fetches
        # them)
        if id(node) in paths and isinstance(out, jax.Array):
            records.append((paths[id(node)], out))

    with compat.flax_intercept_calls([node for _, node in nodes], record):
        _recording = (records, paths)
        try:
            yield records
        finally:
            _recording = None


def settings() -> dict[str, str]:
    return {
        "flax": flax.__version__,
        "jax": jax.__version__,
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
    }


def numerics():
    """Full fp32 matmuls for the duration."""
    return jax.default_matmul_precision("float32")
