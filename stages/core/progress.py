"""Progress lines for long loops: rows done/total, rate, ETA, LLM cache hits and errors, one line every few seconds."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, every_s: float = 5.0, stream: TextIO = sys.stderr) -> None:
        self.label, self.total, self.every_s, self.stream = label, total, every_s, stream
        self.done = self.errors = self.cache_hits = 0
        self.started = self._last = time.monotonic()

    def advance(self, error: bool = False, cache_hits: int = 0) -> None:
        self.done += 1
        self.errors += error
        self.cache_hits += cache_hits
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done == self.total:
            self._last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (
            f"[{self.label}] {self.done}/{self.total} rows  {rate:.1f} rows/s  "
            f"ETA {eta:.0f}s  cache hits {self.cache_hits}  errors {self.errors}  elapsed {elapsed:.1f}s"
        )
