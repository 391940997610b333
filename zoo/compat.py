"""Every framework internal the zoo relies on, in one place, each behind a version guard.

Where a public API does the job it is used instead; what is left needs an internal or a patch of
a framework's own methods. Each function here checks that the installed framework is a version
the internal was tested with (``TESTED``) and, outside it, takes a public fallback (slower,
holding more memory, or comparing outputs only), warning once with ``CompatWarning``:

================================  ==========================================  =====================
what                              internal (tested versions)                  public fallback
================================  ==========================================  =====================
``keras_sublayers``               ``Layer._flatten_layers`` (keras)           walk the layer
                                                                              attributes
``keras_save_streamed``           ``keras.src.saving.saving_lib`` store and   assign every value,
                                  state walk (keras)                          ``model.save``
``keras_load_weights``            ``keras.src.saving.saving_lib`` store and   ``model.load_weights``
                                  state walk (keras)                          (a ``.keras``: read
                                                                              through ``zipfile``)
``keras_variable_datasets``       ``keras.src.saving.saving_lib`` state walk  none: a file's values
                                  (keras)                                     come back in the
                                                                              dtype the model was
                                                                              built in
``keras_intercept_calls``         an instance ``call`` over the class's       outputs only, no
                                  (keras: ``Layer.__call__`` calls            per-layer capture
                                  ``self.call``)
``keras_deferred_values``,        Keras' list of variables made without a     variables made with
``keras_settle``                  value (``global_state``                     their initial values
                                  ``uninitialized_variables``; keras, JAX
                                  backend)
``flax_intercept_calls``          a class ``__call__`` wrapper on nnx         outputs only, no
                                  modules (flax)                              per-layer capture
``jax_backends_initialized``      ``xla_bridge.backends_are_initialized``     ``None`` (not known)
                                  (jax)
================================  ==========================================  =====================

Importing this module imports no framework; each function imports the one it needs.
``forced_fallbacks()`` makes every guard take its fallback, so the tests run both paths.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

__all__ = [
    "TESTED",
    "CompatWarning",
    "flax_intercept_calls",
    "forced_fallbacks",
    "jax_backends_initialized",
    "keras_deferred_values",
    "keras_intercept_calls",
    "keras_load_weights",
    "keras_save_streamed",
    "keras_settle",
    "keras_sublayers",
    "keras_variable_datasets",
    "supported",
]

#: distribution -> [lowest, highest) version each internal here was tested with
TESTED: dict[str, tuple[str, str]] = {
    "keras": ("3.15", "3.16"),
    "flax": ("0.12", "0.13"),
    "jax": ("0.10", "0.11"),
}

_FORCED = False


class CompatWarning(UserWarning):
    """A framework version outside ``TESTED``: a public fallback is used instead of an internal."""


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


@functools.cache
def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def supported(dist: str, version: str | None = None) -> bool:
    """Whether ``dist`` (installed, or at ``version``) is in the range ``TESTED`` gives it."""
    if _FORCED:
        return False
    version = version or _installed(dist)
    if version is None:
        return False
    low, high = TESTED[dist]
    return _parse(low) <= _parse(version) < _parse(high)


@functools.cache
def _warn(dist: str, what: str) -> None:
    low, high = TESTED[dist]
    warnings.warn(
        f"{dist} {_installed(dist)} is outside the versions {what} was tested with "
        f"([{low}, {high})): using the public fallback",
        CompatWarning,
        stacklevel=3,
    )


def _internal(dist: str, what: str) -> bool:
    if supported(dist):
        return True
    if not _FORCED:
        _warn(dist, what)
    return False


@contextlib.contextmanager
def forced_fallbacks() -> Iterator[None]:
    """Every guard takes its public fallback for the duration (tests)."""
    global _FORCED
    previous, _FORCED = _FORCED, True
    try:
        yield
    finally:
        _FORCED = previous


# --------------------------------------------------------------------------- Keras


def keras_sublayers(layer: Any) -> list[tuple[str, Any]]:
    """Every layer under ``layer`` (not itself) with its path below ``layer``: the names from
    ``layer``'s child down, joined by ``/`` (``attn/qkv``), depth first, each layer once (at its
    first path). Keras 3 has no public iterator over direct sublayers;
    ``Layer._flatten_layers`` is what Keras itself uses. The fallback walks the layer attributes
    (lists, tuples and dicts of layers included). Unlike ``Layer.path``, set when a layer
    builds inside its parent's name scope, these paths exist for layers Keras builds at
    construction (``ReLU``, pooling)."""
    import keras

    def children(obj: Any) -> Iterator[Any]:
        if _internal("keras", "Layer._flatten_layers"):
            yield from obj._flatten_layers(include_self=False, recursive=False)
            return
        for value in vars(obj).values():
            items = value.values() if isinstance(value, dict) else value
            if isinstance(items, (list, tuple)) or isinstance(value, dict):
                yield from (v for v in items if isinstance(v, keras.layers.Layer))
            elif isinstance(value, keras.layers.Layer):
                yield value

    seen: set[int] = {id(layer)}
    out: list[tuple[str, Any]] = []

    def walk(obj: Any, prefix: str) -> None:
        for child in children(obj):
            if id(child) not in seen:
                seen.add(id(child))
                out.append((prefix + child.name, child))
                walk(child, prefix + child.name + "/")

    walk(layer, "")
    return out


@contextlib.contextmanager
def keras_intercept_calls(
    layers: Iterable[tuple[Any, Callable[[Any], None]]],
) -> Iterator[bool]:
    """For the duration, each ``(layer, record)`` pair's ``record(output)`` sees every output of
    ``layer.call`` (Keras' ``Layer.__call__`` calls ``self.call``, so an instance attribute
    wraps it). Yields whether calls are intercepted (the fallback intercepts none)."""
    if not _internal("keras", "wrapping Layer.call"):
        yield False
        return
    patched = []
    for layer, record in layers:
        original = layer.call

        def call_and_record(*args, _orig=original, _record=record, **kwargs):
            out = _orig(*args, **kwargs)
            _record(out)
            return out

        layer.call = call_and_record
        patched.append(layer)
    try:
        yield True
    finally:
        for layer in patched:
            del layer.call


@contextlib.contextmanager
def keras_deferred_values() -> Iterator[bool]:
    """For the duration, Keras variables are made with a shape and a dtype but no value: no
    initializer runs (on JAX each random initializer compiles once per shape, seconds for a
    block whose weights are about to be assigned anyway). Assign every value before use, then
    ``keras_settle`` them. Yields whether values are deferred: only on the JAX backend, whose
    variables can be assigned before they hold a value; elsewhere (and in the fallback) variables
    are made with their initial values as usual."""
    import keras

    if keras.backend.backend() != "jax" or not _internal("keras", "deferred variable values"):
        yield False
        return
    with keras.StatelessScope(initialize_variables=False):
        yield True


def keras_settle(variables: Iterable[Any]) -> None:
    """Keras keeps the variables made without a value (``keras_deferred_values``) on a list and
    initializes them at the next exit of a top-level ``StatelessScope``, raising for any assigned
    since. Take ``variables`` off that list, first giving any still without a value its
    initializer's. Nothing to do in the fallback (no variable is made without a value)."""
    if not _internal("keras", "deferred variable values"):
        return
    from keras.src.backend.common import global_state

    pending = global_state.get_global_attribute("uninitialized_variables")
    if not pending:
        return
    settle = {id(v) for v in variables}
    for v in pending:
        if id(v) in settle and v._value is None:
            v._deferred_initialize()
    pending[:] = [v for v in pending if id(v) not in settle]


def keras_save_streamed(
    model: Any,
    weights_path: str | os.PathLike,
    keras_path: str | os.PathLike,
    value_of: Callable[[Any], Any],
    concrete: Callable[[], Any],
) -> int:
    """Write ``model``'s ``.weights.h5`` and ``.keras`` with each variable's value from
    ``value_of(variable)`` as Keras' saver reaches it (one value in memory at a time; ``model``
    may hold no values at all). The ``.keras`` archive is what ``model.save`` writes. Returns the
    number of variables written.

    The fallback builds ``concrete()`` (a model with values), assigns every value and saves it
    with ``save_weights`` / ``save``: the whole model in memory.
    """
    import keras

    if not _internal("keras", "keras.src.saving.saving_lib"):
        target = concrete()
        for v, t in zip(model.weights, target.weights, strict=True):
            if v.path.partition("/")[2] != t.path.partition("/")[2]:  # under the root's name
                raise ValueError(f"{t.path} is not {v.path}: another model")
            t.assign(value_of(v))
        target.save_weights(os.fspath(weights_path))
        target.save(os.fspath(keras_path))
        return len(model.weights)

    from keras.src.saving import saving_lib

    written = []

    class Store(saving_lib.H5IOStore):
        def __setitem__(self, key, value):
            if isinstance(value, keras.Variable):
                written.append(value.path)
                value = value_of(value)
            super().__setitem__(key, value)

    store = Store(os.fspath(weights_path), mode="w")
    try:
        saving_lib._save_state(
            model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set()
        )
    finally:
        store.close()
    if len(set(written)) != len(written):
        raise ValueError("a variable was written twice")
    config_json, metadata_json = saving_lib._serialize_model_as_json(model)
    with zipfile.ZipFile(os.fspath(keras_path), "w") as zf:
        zf.writestr(saving_lib._METADATA_FILENAME, metadata_json)
        zf.writestr(saving_lib._CONFIG_FILENAME, config_json)
        zf.write(os.fspath(weights_path), saving_lib._VARS_FNAME_H5)
    return len(written)


def keras_variable_datasets(model: Any) -> dict[str, str] | None:
    """Keras variable path -> the HDF5 path of the dataset Keras' saver writes it to and its
    loader reads it from (``/layers/<layer>/vars/<i>``; a Keras file names no variable): the
    walk ``keras_save_streamed`` and ``model.save_weights`` take, with a store that writes
    nothing and records where each variable would go. None in the fallback (Keras versions
    whose saver internals were not tested)."""
    if not _internal("keras", "keras.src.saving.saving_lib"):
        return None

    import keras
    from keras.src.saving import saving_lib

    found: dict[str, str] = {}

    class Walk(saving_lib.H5IOStore):
        def __init__(self) -> None:  # no file
            self.mode, self._h5_entry_path = "w", None

        def __bool__(self) -> bool:
            return True

        def make(self, path, metadata=None):
            self._h5_entry_path = path
            return self

        def __setitem__(self, key, value):
            if isinstance(value, keras.Variable):
                group = f"/{self._h5_entry_path}/vars" if self._h5_entry_path else "/vars"
                found[value.path] = f"{group}/{key}"

        def close(self):
            pass

    saving_lib._save_state(
        model, weights_store=Walk(), assets_store=None, inner_path="", visited_saveables=set()
    )
    return found


def keras_load_weights(model: Any, weights: Any, path: str | os.PathLike) -> None:
    """``model.load_weights(path)`` reading the HDF5 file ``weights``, already open in h5py
    (and left open): the same walk, the same errors. For a ``.keras`` archive, whose
    ``model.weights.h5`` Keras reads through ``zipfile`` (a backward seek there re-reads the
    member from its start: minutes for a large model), ``weights`` is that member opened in
    place. The fallback is ``model.load_weights(path)`` (``weights`` unused)."""
    if not _internal("keras", "keras.src.saving.saving_lib"):
        model.load_weights(os.fspath(path))
        return

    from keras.src.saving import saving_lib

    class Store(saving_lib.H5IOStore):
        def _get_h5_file(self, path_or_io, mode=None):
            return weights

        def close(self):  # the caller's file
            pass

    failed: set = set()
    errors: dict = {}
    saving_lib._load_state(
        model,
        weights_store=Store(os.fspath(path), mode="r"),
        assets_store=None,
        inner_path="",
        visited_saveables=set(),
        failed_saveables=failed,
        error_msgs=errors,
    )
    if failed:
        saving_lib._raise_loading_failure(errors)


# --------------------------------------------------------------------------- Flax


@contextlib.contextmanager
def flax_intercept_calls(
    modules: Sequence[Any], record: Callable[[Any, Any], None]
) -> Iterator[bool]:
    """For the duration, ``record(module, output)`` sees the output of every ``__call__`` of an
    instance of the classes of the nnx ``modules`` (Python looks ``__call__`` up on the class, so
    each class gets a wrapper; ``record`` picks the instances it wants, e.g. the copies
    ``nnx.jit`` makes), once per call even through ``super().__call__``. Yields whether calls are
    intercepted (the fallback intercepts none)."""
    if not _internal("flax", "wrapping nnx.Module.__call__"):
        yield False
        return
    # Resolve every class's __call__ before patching any, so a subclass never wraps a wrapper.
    originals = {type(m): (type(m).__call__, type(m).__dict__.get("__call__")) for m in modules}
    active: set[int] = set()

    def wrap(original):
        def call_and_record(self, *args, **kwargs):
            if id(self) in active:
                return original(self, *args, **kwargs)
            active.add(id(self))
            try:
                out = original(self, *args, **kwargs)
            finally:
                active.discard(id(self))
            record(self, out)
            return out

        return call_and_record

    for cls, (resolved, _) in originals.items():
        cls.__call__ = wrap(resolved)
    try:
        yield True
    finally:
        for cls, (_, own) in originals.items():
            if own is None:
                del cls.__call__
            else:
                cls.__call__ = own


# --------------------------------------------------------------------------- JAX


def jax_backends_initialized() -> bool | None:
    """Whether JAX has made its backends (clients) yet: options read when a client is made
    (``jax_cpu_enable_async_dispatch``) no longer take effect after. JAX has no public query;
    ``jax._src.xla_bridge.backends_are_initialized`` is what JAX itself checks. The fallback
    answers ``None`` (not known)."""
    if not _internal("jax", "xla_bridge.backends_are_initialized"):
        return None
    from jax._src import xla_bridge

    return bool(xla_bridge.backends_are_initialized())
