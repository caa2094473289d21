"""Progress of bulk runs: rows done/total, rows/s, ETA, cache hits and errors; a redrawn bar on a terminal, one line
every few seconds in CI logs."""

from __future__ import annotations

import io

import pytest

from stages.core.progress import Progress, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_shows_rows_rate_eta_cache_hits_and_errors() -> None:
    clock, stream = Clock(), io.StringIO()
    progress = Progress("run uc v1", 10, stream=stream, clock=clock)
    for i in range(4):
        clock.now += 0.5
        progress.advance(error=i == 3, cache_hits=1 if i < 2 else 0)
    assert progress.line() == "[run uc v1] 4/10 rows  2.0 rows/s  ETA 3s  cache hits 2  errors 1  elapsed 2s"


def test_in_logs_one_line_every_few_seconds_and_always_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    clock, stream = Clock(), io.StringIO()  # not a terminal
    progress = Progress("run uc v1", 100, stream=stream, clock=clock)
    assert progress.every_s == 5.0
    for _ in range(100):
        clock.now += 0.3  # 30 s in all
        progress.advance()
    lines = stream.getvalue().splitlines()
    assert [line.split()[3] for line in lines] == ["17/100", "34/100", "51/100", "68/100", "85/100", "100/100"]
    assert "\r" not in stream.getvalue() and lines[-1].startswith("[run uc v1] 100/100 rows  3.3 rows/s  ETA 0s")


def test_on_a_terminal_a_bar_is_redrawn_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    clock, stream = Clock(), Terminal()
    progress = Progress("run uc v1", 4, stream=stream, clock=clock)
    assert progress.bar and progress.every_s == 0.2
    for _ in range(4):
        clock.now += 1
        progress.advance(cache_hits=1)
    drawn, cleared = stream.getvalue().split("\n")  # tqdm's frames; the last stays, and tqdm clears the next line
    frames = drawn.split("\r")[1:]
    assert len(frames) == 4 and not cleared.strip()
    assert frames[1] == (
        "run uc v1 [############............]  50% 2/4 rows  1.0 rows/s  ETA 2s  cache hits 2  errors 0  elapsed 2s"
    )
    assert frames[3].startswith("run uc v1 [########################] 100% 4/4 rows")


def test_ci_gets_lines_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    progress = Progress("run", 3, stream=Terminal(), clock=Clock())
    assert not progress.bar and progress.every_s == 5.0


def test_durations() -> None:
    assert [duration(s) for s in (0, 59.4, 61, 3599, 3725, float("inf"))] == ["0s", "59s", "1m01s", "59m59s",
                                                                             "1h02m", "?"]  # fmt: skip


def test_a_loop_that_stopped_early_leaves_no_escape_codes_in_the_next_ones_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    clock, stream = Clock(), io.StringIO()
    Progress("run uc v1", 10, stream=stream, clock=clock).advance()  # never finished (the loop raised)
    after = Progress("run uc v2", 2, stream=stream, clock=clock)
    for _ in range(2):
        clock.now += 1
        after.advance()
    assert stream.getvalue().splitlines()[-1].startswith("[run uc v2] 2/2 rows  1.0 rows/s")
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()
