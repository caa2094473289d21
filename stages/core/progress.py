"""Progress of long loops: rows done/total, rows/s, ETA, LLM cache hits and errors.

On a terminal, a bar redrawn in place (a few times a second); in CI logs (`CI` set) or when the stream is not a
terminal, one plain line every few seconds, and always a last line when the loop ends.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24


def interactive(stream: TextIO) -> bool:
    """Whether to redraw a bar: the stream is a terminal and this is not a CI job."""
    return not os.environ.get("CI") and hasattr(stream, "isatty") and stream.isatty()


def duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m; '?' when unknown."""
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = width if total <= 0 else min(width, done * width // total)
    return "#" * filled + "." * (width - filled)


class Progress:
    def __init__(
        self,
        label: str,
        total: int,
        every_s: float | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`every_s`: how often to print (default 0.2 s redrawing a bar on a terminal, 5 s as lines in logs)."""
        self.label, self.total, self.clock = label, total, clock
        self.stream = stream or sys.stderr
        self.bar = interactive(self.stream)
        self.every_s = every_s if every_s is not None else (0.2 if self.bar else 5.0)
        self.done = self.errors = self.cache_hits = 0
        self.started = self._last = clock()

    def advance(self, error: bool = False, cache_hits: int = 0) -> None:
        self.done += 1
        self.errors += error
        self.cache_hits += cache_hits
        now = self.clock()
        finished = self.done >= self.total
        if now - self._last >= self.every_s or finished:
            self._last = now
            if self.bar:
                self.stream.write(f"\r{self.line(now)}\x1b[K" + ("\n" if finished else ""))
            else:
                self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = (self.clock() if now is None else now) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        percent = f"{self.done / self.total:4.0%}" if self.total else "100%"
        counts = (
            f"{self.done}/{self.total} rows  {rate:.1f} rows/s  ETA {duration(eta)}  "
            f"cache hits {self.cache_hits}  errors {self.errors}  elapsed {duration(elapsed)}"
        )
        if self.bar:
            return f"{self.label} [{bar(self.done, self.total)}] {percent} {counts}"
        return f"[{self.label}] {counts}"
