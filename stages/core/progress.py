"""Progress of long loops, drawn by tqdm: rows done/total, rows/s, ETA, LLM cache hits and errors.

On a terminal, tqdm's bar redrawn in place (a few times a second); in CI logs (`CI` set) or when the stream is not a
terminal, one plain line every few seconds (tqdm's redraws, each written as a line), and always a last line when
the loop ends.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

LINE = "{n}/{total} rows  {average:.1f} rows/s  ETA {eta}  cache hits {hits}  errors {errors}  elapsed {took}"
BAR = "{desc} [{bar:24}] {percentage:3.0f}% " + LINE  # on a terminal: a bar of 24 characters
LOG = "[{desc}] " + LINE  # in CI logs


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


class _Lines:
    """The stream tqdm writes to in logs: each redraw of its line (a carriage return, the line, padding) becomes
    a line of its own; what it writes to clear the line is dropped."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        if line := text.strip("\r\n ").rstrip():
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _Meter(tqdm):  # type: ignore[type-arg]
    """tqdm with the toolkit's figures in its line: the average rate, ETA and elapsed time as 3m05s, cache hits and
    errors; its clock is `clock` (a test's clock ticks by hand)."""

    monitor_interval = 0  # no monitor thread: every redraw comes from an update

    def __init__(self, clock: Callable[[], float], **options: Any) -> None:
        self.hits = self.errors = 0
        super().__init__(**options)
        self._time = clock  # tqdm's own clock
        self.start_t = self.last_print_t = clock()

    @property
    def format_dict(self) -> dict[str, Any]:
        figures = super().format_dict
        elapsed = figures["elapsed"]
        rate = self.n / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else math.inf
        return {**figures, "average": rate, "eta": duration(eta), "took": duration(elapsed), "hits": self.hits,
                "errors": self.errors}  # fmt: skip


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
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.bar = interactive(self.stream)
        self.every_s = every_s if every_s is not None else (0.2 if self.bar else 5.0)
        self._meter = _Meter(
            clock, total=total, desc=label, file=self.stream if self.bar else _Lines(self.stream),
            bar_format=BAR if self.bar else LOG, ascii=".#", mininterval=self.every_s, miniters=1, smoothing=0,
            delay=1e-9, leave=False, position=0,  # nothing drawn before the first row; `advance` keeps the last
        )  # fmt: skip

    @property
    def done(self) -> int:
        return int(self._meter.n)

    @property
    def errors(self) -> int:
        return self._meter.errors

    @property
    def cache_hits(self) -> int:
        return self._meter.hits

    def advance(self, error: bool = False, cache_hits: int = 0) -> None:
        meter = self._meter
        meter.errors += error
        meter.hits += cache_hits
        finished = meter.n + 1 >= self.total
        if finished:
            meter.mininterval = 0  # the last row is always drawn
        meter.update(1)
        if finished:
            if self.bar:
                self.stream.write("\n")  # the last bar stays on screen
            meter.close()

    def line(self) -> str:
        """The line as it is drawn now."""
        return str(self._meter).rstrip()
