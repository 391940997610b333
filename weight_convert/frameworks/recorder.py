"""``Recorder``: the submodule outputs of one call, filled by an adapter. Framework-free.

Every adapter (``reference``, ``keras_port``, ``flax_port``) records the same way::

    with adapter.capture(module) as recorder:  # hooks on every submodule, off until a call
        out = adapter.call(module, inputs, recorder=recorder)
    recorder.records  # [(path, numpy output), ...] in the order the calls finished

``capture`` installs the hooks and hands out the recorder; a hook adds to it only while
``call(..., recorder=recorder)`` runs the module, so a call without the recorder records
nothing, and no state outside the recorder is read between the two. Where a call is compiled
(Keras on JAX, Flax), the hooks see tracers: ``call`` takes them out of the recorder inside the
compiled function (``take_since``), returns them as extra outputs and puts the fetched arrays
back (``put``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["Recorder"]


class Recorder:
    """(path, output) of every submodule call, in the order calls finish.

    ``names`` maps ``id(submodule)`` to its path, for adapters whose hooks see modules rather
    than paths (Flax adds the copies ``nnx.jit`` makes). ``intercepting`` is False where the
    framework version gives no way to hook the calls (``zoo.compat``): only the outputs can be
    compared then.
    """

    def __init__(self, names: dict[int, str] | None = None, intercepting: bool = True) -> None:
        self.records: list[tuple[str, Any]] = []
        self.names: dict[int, str] = dict(names or {})
        self.intercepting = intercepting
        self._running = False

    def add(self, path: str, value: Any) -> None:
        """A hook's report: kept only while the module runs under ``running``."""
        if self._running:
            self.records.append((path, value))

    @contextlib.contextmanager
    def running(self) -> Iterator[Recorder]:
        """The hooks report to this recorder for the duration (one ``adapter.call``)."""
        if self._running:
            raise RuntimeError("the recorder is already recording a call")
        self._running = True
        try:
            yield self
        finally:
            self._running = False

    def take_since(self, start: int) -> tuple[list[str], list[Any]]:
        """Remove the records made since there were ``start`` and return their paths and values
        (inside a compiled function: tracers, to return as extra outputs)."""
        taken = self.records[start:]
        del self.records[start:]
        return [p for p, _ in taken], [v for _, v in taken]

    def put(self, paths: Sequence[str], values: Sequence[Any]) -> None:
        """Add records back, as numpy (the compiled function's extra outputs)."""
        self.records.extend((p, np.asarray(v)) for p, v in zip(paths, values, strict=True))

    def to_numpy(self, convert: Callable[[Any], np.ndarray] = np.asarray) -> None:
        """Make every recorded value a numpy array (``convert`` fetches a framework tensor)."""
        self.records = [
            (p, v if isinstance(v, np.ndarray) else np.asarray(convert(v))) for p, v in self.records
        ]

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.records)
