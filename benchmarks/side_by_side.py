"""What the side-by-side benchmarks share: two contenders measured in alternating order within each round (so a
busy machine slows both alike), their medians and ratio, and the results written as JSON and as a Markdown table."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Timed:
    wall_s: float
    cpu_s: float  # user + system seconds of the command and the processes it waited for
    result: subprocess.CompletedProcess[str]


def run_timed(command: list[str], cwd: Path, env: dict[str, str]) -> Timed:
    """Run `command` to its end, its output captured; raise, with that output, if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall_s=wall, cpu_s=cpu, result=result)


def alternate(contenders: tuple[str, str], rounds: int, measure: Callable[[str], dict[str, float]]) -> dict:
    """`measure(name)` for both contenders in each round, the first one first in even rounds; the runs per name."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for round_ in range(rounds):
        for name in contenders if round_ % 2 == 0 else contenders[::-1]:
            runs[name].append(measure(name))
            print(f"round {round_ + 1}/{rounds} {name}: {runs[name][-1]}", file=sys.stderr)
    return runs


def medians(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for name, rows in runs.items()}


def ratios(middle: dict[str, dict[str, float]], ours: str, theirs: str) -> dict[str, float]:
    """Theirs over ours, per measure: above 1, ours took less."""
    return {key: middle[theirs][key] / middle[ours][key] for key in middle[ours]}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def table(middle: dict[str, dict[str, float]], ours: str, theirs: str, columns: tuple[str, str],
          rows: tuple[tuple[str, str], ...], ratio_digits: int = 1) -> list[str]:  # fmt: skip
    """A Markdown table: a row per (key, label) with both medians and theirs / ours."""
    lines = [f"| | {columns[0]} | {columns[1]} | ratio |", "|---|---|---|---|"]
    ratio = ratios(middle, ours, theirs)
    for key, label in rows:
        lines.append(f"| {label} (median) | {middle[ours][key]:.2f} | {middle[theirs][key]:.2f} "
                     f"| {ratio[key]:.{ratio_digits}f}x |")  # fmt: skip
    return lines


def publish(stem: str, results: dict[str, Any], lines: list[str]) -> None:
    """Write `<stem>-results.json` and `<stem>-results.md` beside the benchmarks, and print the table."""
    (HERE / f"{stem}-results.json").write_text(json.dumps(results, indent=2) + "\n")
    (HERE / f"{stem}-results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
