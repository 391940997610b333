"""SIGINT and SIGTERM during a run: the run stops, cleans up and says so in one line, wherever the
signal lands.

While ``raising()`` is on, both signals run ``_handler``: it records the signal, and the first
one raises ``Interrupted`` where the interpreter happens to be, so that the cleanup a failure
gets runs for it too. That exception can be lost: raised inside a garbage-collector callback
(JAX's ``_xla_gc_callback``), a ``__del__`` or a weakref callback, it is printed as "Exception
ignored" and dropped; code that catches ``BaseException`` may turn it into another error (Keras'
``load_model`` collects every failure into one ``ValueError``). The run would go on, or fail
with the wrong message. So the signal is recorded as well, and ``check()`` raises it again at
the safe points: each tensor written (``progress.Progress.track``), before and after the
outputs are published (``outputs.atomic``), after ``--verify`` and at the end of the command
(``cli.main``, which also takes any error after a signal for the signal). Later signals are
recorded only: they must not cut the cleanup short, and a run already stopping needs no second
exception.

What the line says does not depend on the way the exception took either: the run records the
outputs it published (``published``, from ``outputs.atomic``) and the stage the first signal
cut short (``stage``: ``--verify``), and ``interrupted()`` builds the exception from that record
(``Interrupted.written``, ``Interrupted.unfinished``).

A run that has reported its result (``cli.main`` returned) exits with that result even if a
signal comes while the interpreter shuts down (``exit_after_run``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn

from weight_convert.errors import Interrupted

__all__ = [
    "SIGNALS",
    "check",
    "exit_after_run",
    "interrupted",
    "published",
    "raising",
    "received",
    "record",
    "stage",
]

#: the signals that stop a run
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class _Run:
    received: list[int] = field(default_factory=list)  # the signals that came, first first
    stages: list[str] = field(default_factory=list)  # the stages running now, innermost last
    cut: str = ""  # the stage running when the first signal came
    written: list[str] = field(default_factory=list)  # outputs published


_run = _Run()


def received() -> int | None:
    """The first signal that came during the current run, or None."""
    return _run.received[0] if _run.received else None


def record(signum: int) -> None:
    """Record that ``signum`` came (a ``KeyboardInterrupt`` seen elsewhere is a SIGINT)."""
    if not _run.received:
        _run.cut = _run.stages[-1] if _run.stages else ""
    _run.received.append(signum)


def interrupted() -> Interrupted:
    """The exception for the first signal of the run, naming the outputs already published."""
    return Interrupted(_run.received[0], _run.written, _run.cut if _run.written else "")


def _handler(signum: int, frame) -> None:
    first = not _run.received
    record(signum)
    if first:
        raise interrupted()


def check() -> None:
    """Raise ``Interrupted`` if a signal came during the run: its exception may have been
    swallowed where the handler raised it. Nothing outside ``raising()``."""
    if _run.received:
        raise interrupted()


def published(paths: Sequence[object]) -> None:
    """Record outputs published: a signal from now on keeps them, and its line names them."""
    _run.written.extend(str(p) for p in paths)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """A stage of the run (``--verify``) that a signal's line says it cut short."""
    _run.stages.append(name)
    try:
        yield
    finally:
        _run.stages.pop()


@contextmanager
def raising() -> Iterator[None]:
    """SIGINT and SIGTERM go to ``_handler`` while the block runs, and back to their previous
    handlers after. A signal the process ignores (``nohup``, a background job) stays ignored;
    off the main thread (which alone gets signals) nothing changes."""
    global _run
    _run = _Run()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        for signum, handler in previous.items():
            if handler is not signal.SIG_IGN:
                signal.signal(signum, _handler)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        _run = _Run()


def exit_after_run(code: int) -> NoReturn:
    """Exit with ``code`` (``python -m weight_convert``, once ``cli.main`` returned it), the
    output streams flushed first.

    The interpreter's teardown (about a second with TensorFlow loaded) then ignores SIGINT and
    SIGTERM: the run's result is reported, and a signal then would only turn it into a silent
    130 / 143 (a Python handler cannot help: the interpreter puts the default action back part
    way through its teardown). A run stopped by a signal (130, 143) skips the teardown: its
    files are cleaned up already, and a framework stopped mid-computation can crash while it
    is torn down (JAX stopped inside ``--verify``: SIGSEGV, exit 139, after the run's line)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a closed pipe: nothing more to say there
            pass
    if code in {128 + s for s in SIGNALS}:
        os._exit(code)
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)
