"""A small progress bar on stderr for long conversions (no dependency). Each step is also a
point where a signal whose exception was swallowed stops the run (``signals.check``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from weight_convert import signals

T = TypeVar("T")

__all__ = ["Progress"]


class Progress:
    """``with Progress(enabled) as p: for x in p.track(items, "assign"): ...``.

    Draws ``label [#####.....] 120/356 tensors 1.2 s`` on one stderr line, redrawn at most ten
    times a second; prints nothing when disabled (the default when stderr is not a terminal).
    """

    WIDTH = 30

    def __init__(self, enabled: bool | None = None, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _draw(self, label: str, done: int, total: int, start: float, final: bool) -> None:
        now = time.perf_counter()
        if not final and now - self._last < 0.1:
            return
        self._last = now
        filled = self.WIDTH * done // max(total, 1)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = f"\r{label:<10} [{bar}] {done}/{total} tensors {now - start:5.1f} s"
        self.stream.write(line + ("\n" if final else ""))
        self.stream.flush()

    def track(self, items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
        items = list(items) if total is None else items
        total = len(items) if total is None else total
        start = time.perf_counter()
        done = 0
        for item in items:
            signals.check()
            yield item
            done += 1
            if self.enabled:
                self._draw(label, done, total, start, final=False)
        if self.enabled:
            self._draw(label, done, total, start, final=True)

    def step(self, message: str) -> None:
        """A one-line stage message (``reading checkpoint``)."""
        signals.check()
        if self.enabled:
            self.stream.write(f"{message}\n")
            self.stream.flush()
