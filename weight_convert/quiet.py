"""A run's stderr holds the CLI's own lines only (``cli.main``): what the frameworks print on
their own is kept off it, or shown as ``weight-convert: note: ...`` lines with ``--verbose``.

- TensorFlow's C++ logging: ``TF_CPP_MIN_LOG_LEVEL=3`` (unless the user set it) silences it
  once absl's logging is initialised, but the lines TensorFlow logs while it is imported
  (``WARNING: All log messages before absl::InitializeLog() is called are written to
  STDERR``, oneDNN's ``port.cc``, ``cudart_stub.cc``'s "Could not find cuda drivers") come
  before that and obey no variable. So the first import of a framework (``FRAMEWORKS``), made
  anywhere during the run, runs with file descriptor 2 pointed at a temporary file, restored
  right after; a framework that fails to import is one ``FrameworkError`` line.
- Python warnings (``warnings.showwarning``), log records (a handler on the root logger, which
  keeps the ``lastResort`` handler from printing them) and exceptions raised where Python can
  only ignore them (``sys.unraisablehook``: a ``__del__``, a gc callback) become notes. An
  ``Interrupted`` ignored so is dropped: ``weight_convert.signals`` raises it again.

Notes are printed with ``verbose`` only, each as it comes (those made during a framework's
import once the import is over); else they are dropped.
"""

from __future__ import annotations

import importlib.abc
import logging
import os
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from weight_convert import signals
from weight_convert.errors import FrameworkError, Interrupted, first_line, one_line

__all__ = ["ENVIRONMENT", "FRAMEWORKS", "run"]

#: set for the run unless the user set them
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}
#: top-level packages whose first import runs with file descriptor 2 set aside
FRAMEWORKS = frozenset({"tensorflow", "keras", "jax", "jaxlib", "flax", "torch"})
NOTE = "weight-convert: note: "


class _Notes:
    """Collects what would have gone to stderr; prints it with ``verbose`` only."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.held: list[str] = []
        self.holding = 0  # inside a framework's import: fd 2 is not the user's stderr

    def add(self, text: object) -> None:
        if not self.verbose:
            return
        self.held.append(f"{NOTE}{one_line(text)}")
        if not self.holding:
            self.flush()

    def flush(self) -> None:
        lines, self.held = self.held, []
        for line in lines:
            print(line, file=sys.stderr)

    def warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self.add(f"{category.__name__}: {message} ({filename}:{lineno})")

    def unraisable(self, unraisable) -> None:
        error = unraisable.exc_value
        if isinstance(error, KeyboardInterrupt) and signals.received() is None:
            signals.record(signal.SIGINT)  # the default handler's: check() raises it again
        if isinstance(error, (Interrupted, KeyboardInterrupt)):
            return
        where = unraisable.err_msg or "Exception ignored in"
        self.add(f"{where} {unraisable.object!r}: {type(error).__name__}: {first_line(error)}")


class _NoteHandler(logging.Handler):
    def __init__(self, notes: _Notes) -> None:
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.add(f"{record.name}: {record.levelname.lower()}: {record.getMessage()}")


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # none, closed or broken: nothing to flush
        pass


@contextmanager
def _fd2_aside(notes: _Notes) -> Iterator[None]:
    """File descriptor 2 points at a temporary file in the block; its lines become notes. An
    enclosing block (a framework importing another) has set it aside already."""
    saved = aside = None
    if not notes.holding:
        try:
            aside = tempfile.TemporaryFile()
            saved = os.dup(2)
        except OSError:  # nowhere to put it, or no stderr at all: leave fd 2 as it is
            if aside is not None:
                aside.close()
    if saved is None or aside is None:
        yield
        return
    _flush_stderr()
    with aside:
        notes.holding += 1
        try:
            os.dup2(aside.fileno(), 2)
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            notes.holding -= 1
        aside.seek(0)
        lines = aside.read().decode(errors="replace").splitlines()
    for line in lines:
        if line.strip():
            notes.add(line)
    notes.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of a framework's top-level module with fd 2 set aside."""

    def __init__(self, loader, notes: _Notes, outermost: Callable[[], bool]) -> None:
        self.loader, self.notes, self.outermost = loader, notes, outermost

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # as if imported as usual
        outermost = self.outermost()
        try:
            with _fd2_aside(self.notes):
                self.loader.exec_module(module)
        except Exception as e:
            if not outermost:  # an enclosing import may expect this very error (optional imports)
                raise
            raise FrameworkError(f"cannot import {module.__name__}: {first_line(e)}") from e


class _QuietImports(importlib.abc.MetaPathFinder):
    """Finds a framework's top-level module with the other finders and hands it out with a
    ``_QuietLoader``."""

    def __init__(self, notes: _Notes) -> None:
        self.notes = notes

    def _outermost(self) -> bool:
        return self.notes.holding == 0

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in FRAMEWORKS:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader, self.notes, self._outermost)
                return spec
        return None


@contextmanager
def run(verbose: bool = False) -> Iterator[None]:
    """The block's frameworks and warnings print nothing on stderr (``verbose``: notes)."""
    notes = _Notes(verbose)
    added = {k: v for k, v in ENVIRONMENT.items() if k not in os.environ}
    os.environ.update(added)
    finder = _QuietImports(notes)
    sys.meta_path.insert(0, finder)
    handler = _NoteHandler(notes)
    logging.getLogger().addHandler(handler)
    unraisablehook, sys.unraisablehook = sys.unraisablehook, notes.unraisable
    try:
        with warnings.catch_warnings():
            warnings.showwarning = notes.warning
            yield
    finally:
        sys.unraisablehook = unraisablehook
        logging.getLogger().removeHandler(handler)
        sys.meta_path.remove(finder)
        for key in added:
            os.environ.pop(key, None)
        notes.flush()
