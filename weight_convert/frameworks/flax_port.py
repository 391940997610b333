"""Adapter for the Flax NNX port: parameters by path, assignment, call capture.

``nnx`` state paths are attribute paths: ``('blocks', 0, 'attn', 'qkv', 'kernel')`` is port path
``blocks.0.attn.qkv.kernel``. ``build(..., initialize=False)`` and ``build_model(...,
initialize=False)`` give modules with abstract parameters (no initializer runs: each random
initializer compiles once per shape) for an ``assign`` that follows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import ports.flax.layers
from ports.flax.layers.variables import (
    CHECKPOINT_VARIABLES,
    abstract,
    declare_dtype,
    set_compute_dtype,
)
from weight_convert.frameworks import output_list
from weight_convert.frameworks.recorder import Recorder
from weight_convert.frameworks.sites import collect_sites
from weight_convert.tolerance import MIXED_BFLOAT16
from zoo import compat
from zoo.blocks import Ref

NAME = "flax"


def resolve_refs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    ns = ports.flax.layers
    return {k: getattr(ns, v.name) if isinstance(v, Ref) else v for k, v in kwargs.items()}


def build(
    block: str,
    kwargs: Mapping[str, Any],
    seed: int = 0,
    *,
    initialize: bool = True,
    dtype: str | None = None,
) -> nnx.Module:
    """The port of block ``block`` (``zoo.blocks``) in eval mode; with ``initialize=False`` its
    parameters are abstract (``ports.flax.layers.variables.abstract``), declared ``dtype``
    (None: float32): ``assign`` them before it runs. ``dtype="mixed_bfloat16"``: float32
    parameters, every layer computing in bfloat16 (``set_compute_dtype``)."""
    cls = getattr(ports.flax.layers, block)
    kwargs = resolve_refs(kwargs)
    if initialize:
        module = cls(**kwargs, rngs=nnx.Rngs(seed))
    else:
        module = abstract(lambda rngs: cls(**kwargs, rngs=rngs), nnx.Rngs(seed))
    return _in_dtype(module, dtype, initialize)


def _in_dtype(module: nnx.Module, dtype: str | None, initialize: bool) -> nnx.Module:
    """``"mixed_bfloat16"``: the layers compute in bfloat16, their parameters stay float32
    (``set_compute_dtype``); another ``dtype``: abstract parameters declared ``dtype``."""
    if dtype == MIXED_BFLOAT16:
        set_compute_dtype(module, jnp.bfloat16)
    elif dtype is not None and not initialize:
        declare_dtype(module, jnp.dtype(dtype))
    module.eval()
    return module


def build_model(config, *, initialize: bool = True, dtype: str | None = None) -> nnx.Module:
    """The model ``config`` describes (any family) in eval mode; with ``initialize=False`` its
    parameters are abstract, declared ``dtype`` (None: float32): ``assign`` them before it
    runs. ``dtype="mixed_bfloat16"``: as ``build``."""
    from ports.flax.models import abstract_model, build_model

    model = build_model(config) if initialize else abstract_model(config)
    return _in_dtype(model, dtype, initialize)


@contextlib.contextmanager
def dtype_scope(dtype: str | None) -> Iterator[None]:
    """What running in ``dtype`` needs for the duration: 64-bit JAX for float64."""
    if dtype != "float64":
        yield
        return
    with jax.enable_x64(True):
        yield


def materialize(module: nnx.Module, inputs: list[np.ndarray], *, initialize: bool = True) -> None:
    """NNX modules create their parameters at construction (see ``build``)."""


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


def _ordered(out: Any) -> Any:
    """A features model's dict as the list of its values, in its order: out of ``jax.jit`` a
    dict comes back with its keys sorted (pytree order), not in the order asked."""
    return output_list(out) if isinstance(out, dict) else out


def _to_numpy(out: Any) -> np.ndarray | list[np.ndarray]:
    outs = output_list(out)
    if outs is not None:
        return [np.asarray(t) for t in outs]
    return np.asarray(out)


def mode(module: nnx.Module, training: bool) -> nnx.Module:
    """A view of ``module`` (``nnx.view``: the same variables and rng streams) in training mode
    (dropout, attention dropout and drop path active) or in inference mode; ``module`` itself is
    left as it is."""
    return nnx.view(module, deterministic=not training, raise_if_not_found=False)


def stochastic_sites(module: nnx.Module) -> dict[str, tuple[str, float]]:
    """Every active stochastic site (``nnx.Dropout``, ``DropPath``, attention dropout) by port
    path: (kind, rate); see ``weight_convert.frameworks.sites``."""
    nodes = ((_join(p), n) for p, n in nnx.iter_graph(module) if isinstance(n, nnx.Module))
    return collect_sites(nodes, nnx.Dropout, "rate", ports.flax.layers.DropPath)


def call(
    module: nnx.Module,
    inputs: list[np.ndarray],
    *,
    training: bool = False,
    recorder: Recorder | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Run eagerly, in inference mode unless ``training`` (``mode``); a model returning several
    arrays gives a list.

    With a ``recorder`` (from ``capture(module)``) the module runs compiled instead
    (``nnx.jit``; eager JAX compiles every op for every new shape, which made large models
    slow): the recorded layer outputs, traced while compiling, come back as extra results of the
    compiled function.
    """
    arrays = [jnp.asarray(x) for x in inputs]
    module = mode(module, training)
    if recorder is None:
        return _to_numpy(module(*arrays))
    paths: list[str] = []

    def run(m: nnx.Module, *xs: jax.Array):
        # nnx.jit hands ``run`` a copy of the module tree: record its submodules by path too
        recorder.names.update(
            {id(n): _join(p) for p, n in nnx.iter_graph(m) if p and isinstance(n, nnx.Module)}
        )
        start = len(recorder.records)
        out = m(*xs)
        traced_paths, traced = recorder.take_since(start)
        paths.extend(traced_paths)
        return _ordered(out), traced

    with recorder.running():
        # a new function each call: nnx.jit's cache would skip the tracing that records layers
        out, recorded = nnx.jit(run)(module, *arrays)
    recorder.put(paths, recorded)
    return _to_numpy(out)


def _loss(out: Any, cotangent: Callable[[int, tuple], np.ndarray]) -> jax.Array:
    outs = output_list(out) or [out]
    return sum(jnp.sum(o * cotangent(i, tuple(o.shape))) for i, o in enumerate(outs))


def gradients(
    module: nnx.Module,
    inputs: list[np.ndarray],
    cotangent: Callable[[int, tuple], np.ndarray],
    *,
    training: bool = False,
) -> tuple[list[np.ndarray | None], dict[str, np.ndarray]]:
    """Gradients of ``sum_i <output_i, cotangent(i, shape of output i)>`` (in inference mode
    unless ``training``: ``mode``) with respect to each floating input (None for integer inputs)
    and to every ``nnx.Param``, by port path (``nnx.grad``, compiled)."""
    floating = [np.issubdtype(np.asarray(x).dtype, np.floating) for x in inputs]
    arrays = [jnp.asarray(x) for x in inputs]

    def loss(m: nnx.Module, float_xs: list[jax.Array]) -> jax.Array:
        it = iter(float_xs)
        return _loss(
            m(*[next(it) if f else x for x, f in zip(arrays, floating, strict=True)]), cotangent
        )

    float_xs = [x for x, f in zip(arrays, floating, strict=True) if f]
    grad = nnx.jit(nnx.grad(loss, argnums=(0, 1)))
    grads, input_grads = grad(mode(module, training), float_xs)
    it = iter(input_grads)
    params = {_join(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(grads)}
    return [np.asarray(next(it)) if f else None for f in floating], params


def optimizer_steps(
    module: nnx.Module,
    inputs: list[np.ndarray],
    cotangent: Callable[[int, tuple], np.ndarray],
    spec,
    steps: int,
) -> list[dict[str, np.ndarray]]:
    """``steps`` steps of ``ports.flax.training.nnx_optimizer(module, spec)`` on the loss of
    ``gradients`` (the same inputs every step, the module's current mode), one ``nnx.jit``-ted
    step (``nnx.grad``, ``Optimizer.update``). Every ``nnx.Param`` by port path after each
    step."""
    from ports.flax.training import nnx_optimizer

    optimizer = nnx_optimizer(module, spec)
    arrays = [jnp.asarray(x) for x in inputs]

    @nnx.jit
    def step(m: nnx.Module, opt: nnx.Optimizer) -> None:
        opt.update(m, nnx.grad(lambda m: _loss(m(*arrays), cotangent))(m))

    after = []
    for _ in range(steps):
        step(module, optimizer)
        params = nnx.to_flat_state(nnx.state(module, nnx.Param))
        after.append({_join(p): np.array(v.get_value()) for p, v in params})
    return after


@nnx.jit
def _jitted(module: nnx.Module, *inputs: jax.Array) -> Any:
    return _ordered(module(*inputs))


def jit_call(module: nnx.Module, inputs: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """Run under ``nnx.jit`` (compiled once per module structure and input shapes); numpy out
    as ``call``."""
    return _to_numpy(_jitted(module, *[jnp.asarray(x) for x in inputs]))


@contextlib.contextmanager
def capture(module: nnx.Module) -> Iterator[Recorder]:
    """Hooks on every submodule for the duration; yields the ``Recorder`` that ``call(module,
    inputs, recorder=...)`` fills with (path, output) of each submodule call, in the order calls
    finish (``zoo.compat.flax_intercept_calls``; where it cannot intercept, the recorder says so
    and stays empty)."""
    nodes = [(p, node) for p, node in nnx.iter_graph(module) if p and isinstance(node, nnx.Module)]
    recorder = Recorder({id(node): _join(p) for p, node in nodes})

    def record(node: nnx.Module, out: Any) -> None:
        # ``names`` also gets the copies ``call`` compiles; outputs are tracers then
        if id(node) in recorder.names and isinstance(out, jax.Array):
            recorder.add(recorder.names[id(node)], out)

    with compat.flax_intercept_calls([node for _, node in nodes], record) as intercepting:
        recorder.intercepting = intercepting
        yield recorder


def settings() -> dict[str, str]:
    return {
        "flax": flax.__version__,
        "jax": jax.__version__,
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
    }


def numerics():
    """Full fp32 matmuls for the duration."""
    return jax.default_matmul_precision("float32")
