"""Adapter for the Keras 3 port (any backend): variables by path, assignment, call capture.

Keras variable paths are built from layer names; the ports name every sublayer after its
reference attribute and list items ``attr-i``. ``root/attn/qkv/kernel`` is port path
``attn.qkv.kernel``.

On the JAX backend ``call`` runs the module under ``jax.jit`` (``stateless_call``), blocks and
models alike: JAX's eager mode compiles every op for every new shape, which made one whole-model
call take a minute. The per-layer outputs a ``Recorder`` collects are returned from the compiled
function as extra outputs, so the layer-by-layer comparison is the same as in eager mode.
``materialize(..., initialize=False)`` creates the variables from symbolic inputs without
running their initializers (on JAX each random initializer compiles once per shape) for an
``assign`` that follows.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import keras
import numpy as np

import ports.keras.layers
from weight_convert.frameworks import output_list
from weight_convert.frameworks.recorder import Recorder
from weight_convert.frameworks.sites import collect_sites
from zoo import compat
from zoo.blocks import Ref

NAME = f"keras-{keras.backend.backend()}"


def resolve_refs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    ns = ports.keras.layers
    return {k: getattr(ns, v.name) if isinstance(v, Ref) else v for k, v in kwargs.items()}


def build(
    block: str, kwargs: Mapping[str, Any], *, initialize: bool = True, dtype: str | None = None
) -> keras.Layer:
    """The port of block ``block`` (``zoo.blocks``). Keras creates its variables on the first
    call (``materialize``), so ``initialize`` changes nothing here; it is there to match the
    Flax adapter. ``dtype``: see ``dtype_scope``, which must hold while the block is built and
    runs."""
    del initialize, dtype
    return getattr(ports.keras.layers, block)(**resolve_refs(kwargs), name="root")


@contextlib.contextmanager
def dtype_scope(dtype: str | None) -> Iterator[None]:
    """Layers made, built and run for the duration compute in ``dtype`` (None: as they are):
    the global dtype policy is ``dtype`` (a layer takes it when made; the ports pass none to
    their sublayers), with 64-bit JAX for float64 on the JAX backend. ``"mixed_bfloat16"`` is
    Keras' mixed policy: float32 variables, bfloat16 compute. Restored afterwards."""
    if dtype is None:
        yield
        return
    previous, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy(dtype)
    if dtype == "float64":  # what numpy inputs and Python constants become
        keras.config.set_floatx(dtype)
    try:
        if dtype == "float64" and keras.backend.backend() == "jax":
            import jax

            with jax.enable_x64(True):
                yield
        else:
            yield
    finally:
        keras.config.set_dtype_policy(previous)
        keras.config.set_floatx(floatx)


def build_model(config, *, initialize: bool = True, dtype: str | None = None) -> keras.Model:
    """The model ``config`` describes (any family), built: its variables exist. With
    ``initialize=False`` they hold no values where the backend allows it (JAX,
    ``zoo.compat.keras_deferred_values``): ``assign`` every one before the model runs.
    ``dtype``: see ``dtype_scope``, which must hold while the model is built and runs."""
    import ports.keras.models

    del dtype

    if initialize:
        return ports.keras.models.build_model(config)
    with compat.keras_deferred_values():
        return ports.keras.models.build_model(config)


def _dotted(relative: str) -> str:
    """A Keras path below the root (``blocks-0/attn/qkv``) as a port path (``blocks.0.attn.qkv``):
    list items are named ``attr-i`` because dots break the torch backend."""
    return relative.replace("/", ".").replace("-", ".")


def _port_path(keras_path: str, root: keras.Layer) -> str:
    head, _, rest = keras_path.partition("/")
    if head != root.name:
        raise ValueError(f"{keras_path!r} is not under the root layer {root.name!r}")
    return _dotted(rest)


def materialize(module: keras.Layer, inputs: list[np.ndarray], *, initialize: bool = True) -> None:
    """Create the variables for inputs like ``inputs``: Keras builds layers on their first call,
    here a symbolic one (shapes only, nothing computed). With ``initialize=False`` the variables
    hold no values where the backend allows it (``zoo.compat.keras_deferred_values``):
    ``assign`` every one before the module runs."""
    if module.built and module.weights:
        return
    symbolic = [keras.KerasTensor(np.shape(x), dtype=np.asarray(x).dtype) for x in inputs]
    if initialize:
        module(*symbolic)
        return
    with compat.keras_deferred_values():
        module(*symbolic)


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
    """Set variables by port path. Variables made without a value (``initialize=False``) that
    ``values`` leaves out get their initializers' values now."""
    targets = variables(module)
    for path, value in values.items():
        targets[path].assign(np.asarray(value, dtype=targets[path].dtype))
    compat.keras_settle(module.variables)


def stochastic_sites(module: keras.Layer) -> dict[str, tuple[str, float]]:
    """Every active stochastic site (``keras.layers.Dropout``, ``DropPath``, attention dropout)
    by port path: (kind, rate); see ``weight_convert.frameworks.sites``."""
    nodes = [("", module)] + [(_dotted(p), layer) for p, layer in compat.keras_sublayers(module)]
    return collect_sites(nodes, keras.layers.Dropout, "rate", ports.keras.layers.DropPath)


def call(
    module: keras.Layer,
    inputs: list[np.ndarray],
    *,
    training: bool = False,
    recorder: Recorder | None = None,
) -> np.ndarray | list[np.ndarray]:
    """The output as numpy (``training``: dropout, attention dropout and drop path active, run
    eagerly); a list of arrays when the module returns several (features).
    ``recorder`` (from ``capture(module)``) gets every sublayer's output of this call."""
    with recorder.running() if recorder is not None else contextlib.nullcontext():
        if keras.backend.backend() == "jax" and not training:
            out = _jax_jit_call(module, inputs, recorder)
        else:
            out = module(*inputs, training=training)
    if recorder is not None:
        recorder.to_numpy(keras.ops.convert_to_numpy)
    outs = output_list(out)
    if outs is not None:
        return [keras.ops.convert_to_numpy(o) for o in outs]
    return keras.ops.convert_to_numpy(out)


def _jax_jit_call(module: keras.Layer, inputs: list[np.ndarray], recorder: Recorder | None) -> Any:
    """Inference under ``jax.jit``; the recorder's records (tracers, made while compiling) come
    back as extra outputs and are stored as numpy."""
    import jax

    paths: list[str] = []
    kwargs = _training_kwargs(module)

    def run(trainable, non_trainable, *xs):
        start = len(recorder.records) if recorder is not None else 0
        out, _ = module.stateless_call(trainable, non_trainable, *xs, **kwargs)
        if isinstance(out, dict):  # out of jax.jit a dict's keys come back sorted
            out = output_list(out)
        if recorder is None:
            return out, []
        traced_paths, traced = recorder.take_since(start)
        paths.extend(traced_paths)
        return out, traced

    out, recorded = jax.jit(run)(
        [v.value for v in module.trainable_variables],
        [v.value for v in module.non_trainable_variables],
        *[jax.numpy.asarray(x) for x in inputs],
    )
    if recorder is not None:
        recorder.put(paths, recorded)
    return out


def _training_kwargs(module: keras.Layer, training: bool = False) -> dict[str, Any]:
    # stateless_call hands its keywords to the root's ``call`` as they are
    accepts = "training" in inspect.signature(module.call).parameters
    return {"training": training} if accepts else {}


def _loss(out: Any, cotangent: Callable[[int, tuple], np.ndarray]) -> Any:
    outs = output_list(out) or [out]
    # keras.ops.multiply promotes (a bfloat16 output of mixed precision times float32 gives a
    # float32 loss); TensorFlow's ``*`` would refuse the mixed dtypes
    return sum(
        keras.ops.sum(keras.ops.multiply(o, cotangent(i, tuple(o.shape))))
        for i, o in enumerate(outs)
    )


def gradients(
    module: keras.Layer,
    inputs: list[np.ndarray],
    cotangent: Callable[[int, tuple], np.ndarray],
    *,
    training: bool = False,
) -> tuple[list[np.ndarray | None], dict[str, np.ndarray]]:
    """Gradients of ``sum_i <output_i, cotangent(i, shape of output i)>`` (inference mode
    unless ``training``) with respect to each floating input (None for integer inputs) and to
    every trainable variable, by port path: ``tf.GradientTape`` on TensorFlow, ``jax.grad`` of
    ``stateless_call`` on JAX (the seed generators' states are inputs there, their updates
    dropped: one draw per call of ``gradients``), autograd on torch."""
    floating = [np.issubdtype(np.asarray(x).dtype, np.floating) for x in inputs]
    trainable = module.trainable_variables
    paths = [_port_path(v.path, module) for v in trainable]
    backend = keras.backend.backend()
    grad_of = {"tensorflow": _tf_gradients, "jax": _jax_gradients, "torch": _torch_gradients}
    input_grads, grads = grad_of[backend](module, inputs, cotangent, floating, training)
    numpy = [None if g is None else keras.ops.convert_to_numpy(g) for g in input_grads]
    return numpy, {p: keras.ops.convert_to_numpy(g) for p, g in zip(paths, grads, strict=True)}


def optimizer_steps(
    module: keras.Layer,
    inputs: list[np.ndarray],
    cotangent: Callable[[int, tuple], np.ndarray],
    optimizer,
    steps: int,
) -> list[dict[str, np.ndarray]]:
    """``steps`` steps of ``optimizer`` (a ``zoo.training`` spec, built by
    ``ports.keras.training.keras_optimizer``, or a ``keras.optimizers.Optimizer``) on the loss of
    ``gradients`` (the same inputs every step, inference mode): ``apply_gradients`` of
    ``gradients``' parameter gradients. Every trainable variable by port path after each
    step."""
    from ports.keras.training import keras_optimizer

    if not isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer = keras_optimizer(optimizer)
    trainable = module.trainable_variables
    by_path = {_port_path(v.path, module): v for v in trainable}
    if keras.backend.backend() == "jax":  # compiled once, not once per step
        floating = [np.issubdtype(np.asarray(x).dtype, np.floating) for x in inputs]
        compiled, float_xs = _jax_gradient_function(module, inputs, cotangent, floating)

        def parameter_gradients():
            return compiled([v.value for v in trainable], float_xs)[0]
    else:

        def parameter_gradients():
            grads = gradients(module, inputs, cotangent)[1]
            return [grads[p] for p in by_path]

    after = []
    for _ in range(steps):
        grads = parameter_gradients()
        optimizer.apply_gradients(
            [(keras.ops.convert_to_tensor(g), v) for g, v in zip(grads, trainable, strict=True)]
        )
        after.append({p: keras.ops.convert_to_numpy(v.value).copy() for p, v in by_path.items()})
    return after


def _tf_gradients(module, inputs, cotangent, floating, training):
    import tensorflow as tf

    xs = [tf.convert_to_tensor(x) for x in inputs]
    with tf.GradientTape() as tape:
        for x, f in zip(xs, floating, strict=True):
            if f:
                tape.watch(x)
        loss = _loss(module(*xs, training=training), cotangent)
    watched = [x for x, f in zip(xs, floating, strict=True) if f]
    trainable = module.trainable_variables
    # (UnconnectedGradients.ZERO fails on Keras variables, whose dtype is a string: a variable
    # the loss does not reach gets its zeros here)
    grads = tape.gradient(loss, [*watched, *trainable])
    it = iter(grads[: len(watched)])
    params = [
        tf.zeros(v.shape, v.dtype) if g is None else g
        for v, g in zip(trainable, grads[len(watched) :], strict=True)
    ]
    return [next(it) if f else None for f in floating], params


def _jax_gradients(module, inputs, cotangent, floating, training):
    compiled, float_xs = _jax_gradient_function(module, inputs, cotangent, floating, training)
    grads, input_grads = compiled([v.value for v in module.trainable_variables], float_xs)
    it = iter(input_grads)
    return [next(it) if f else None for f in floating], grads


def _jax_gradient_function(module, inputs, cotangent, floating, training=False):
    """``jax.jit(jax.grad(loss))`` of (trainable values, floating inputs), and the floating
    inputs."""
    import jax

    kwargs = _training_kwargs(module, training)
    fixed = [v.value for v in module.non_trainable_variables]
    arrays = [jax.numpy.asarray(x) for x in inputs]

    def loss(trainable, float_xs):
        it = iter(float_xs)
        xs = [next(it) if f else x for x, f in zip(arrays, floating, strict=True)]
        out, _ = module.stateless_call(trainable, fixed, *xs, **kwargs)
        return _loss(out, cotangent)

    float_xs = [x for x, f in zip(arrays, floating, strict=True) if f]
    return jax.jit(jax.grad(loss, argnums=(0, 1))), float_xs


def _torch_gradients(module, inputs, cotangent, floating, training):
    import torch

    xs = [
        keras.ops.convert_to_tensor(x).detach().requires_grad_(f)
        for x, f in zip(inputs, floating, strict=True)
    ]
    trainable = module.trainable_variables
    for v in trainable:
        v.value.grad = None
    with torch.enable_grad():
        loss = _loss(module(*xs, training=training), cotangent)
        loss.backward()
    grads = [torch.zeros_like(v.value) if v.value.grad is None else v.value.grad for v in trainable]
    for v in trainable:
        v.value.grad = None
    return [x.grad if f else None for x, f in zip(xs, floating, strict=True)], grads


@contextlib.contextmanager
def capture(module: keras.Layer) -> Iterator[Recorder]:
    """Hooks on every sublayer for the duration; yields the ``Recorder`` that ``call(module,
    inputs, recorder=...)`` fills with (path, output) of each sublayer call, in the order calls
    finish (``zoo.compat.keras_intercept_calls``; where it cannot intercept, the recorder says
    so and stays empty)."""
    recorder = Recorder()
    eager = keras.backend.backend() != "jax"  # JAX outputs are tracers; ``call`` fetches them
    layers = []
    for relative, layer in compat.keras_sublayers(module):
        path = _dotted(relative)

        def record(out, _path=path):
            if not isinstance(out, (tuple, list, dict)):
                recorder.add(_path, keras.ops.convert_to_numpy(out).copy() if eager else out)

        layers.append((layer, record))
    with compat.keras_intercept_calls(layers) as intercepting:
        recorder.intercepting = intercepting
        yield recorder


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
