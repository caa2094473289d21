"""Compare DVC experiments or commits: each one's selected variant side by side, with significance verdicts.

`llmops compare main my-exp` reads every use case's evaluated rows, metrics and run summary at each revision
through DVC's API (git commits, branches, tags and `dvc exp` names; `workspace` means the files on disk),
compares each revision with the first on the rows they share, and writes the same page the report stage
writes, one per use case. The p-values of a use case's comparisons (every revision x headline metric) are
adjusted together with Benjamini-Hochberg (the false discovery rate of a sweep); verdicts follow the adjusted p.
"""

from __future__ import annotations

import atexit
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core.io import write_text
from stages.metrics import headline
from stages.results import reporting
from stages.results.rows import Columns, VariantReport, flatten_rows, side_by_side

WORKSPACE = "workspace"


class CompareError(ValueError):
    """A revision or use case that cannot be compared; the message says which and why."""


@dataclass(frozen=True)
class Snapshot:
    """One use case at one revision: its selected variant's rows, metrics and run summary."""

    label: str
    variant: str
    rows: list[dict[str, Any]]
    metrics: dict[str, Any]
    run: dict[str, Any]
    run_rows: list[dict[str, Any]] = field(default_factory=list)  # run/outputs/<variant>.jsonl, when asked for


def resolve(root: Path, name: str) -> str | None:
    """The git revision for `name` (an experiment name, or anything git understands); None for the workspace."""
    if name == WORKSPACE:
        return None
    from dvc.repo import Repo
    from dvc.repo.experiments.utils import resolve_name

    with Repo(str(root)) as repo:
        ref = resolve_name(repo.scm, name).get(name)
        if ref is not None:
            return repo.scm.get_ref(str(ref))
        try:
            return repo.scm.resolve_rev(name)
        except Exception as exc:  # scmrepo raises its own RevError
            raise CompareError(f"{name}: neither an experiment nor a git revision ({exc})") from None


def read_at(root: Path, path: str, rev: str | None) -> str:
    """The text of `path` (git- or DVC-tracked) at revision `rev`; None reads the workspace. FileNotFoundError says
    why when it is not there and not fetchable from the default remote."""
    if rev is None:
        return (root / path).read_text(encoding="utf-8")
    from dvc.exceptions import FileMissingError

    try:
        tree = _tree_at(str(root), rev)
        with tree.open(tree.from_os_path(path), mode="r", encoding="utf-8") as file:
            return file.read()
    except Exception as exc:  # DVC's own, its data index's or a remote's errors: not there, or not fetchable
        cause = FileMissingError(path) if isinstance(exc, FileNotFoundError | KeyError) else exc.__cause__ or exc
        raise FileNotFoundError(
            f"{path} at {rev[:10]}: not in this revision, or its data is neither in the local DVC cache nor "
            f"fetchable from the default remote ({type(cause).__name__}: {str(cause)[:200]}); `dvc pull` that "
            "revision's outputs, or compare revisions run here"
        ) from None


@functools.cache
def _tree_at(root: str, rev: str) -> Any:
    """DVC's file system of `root` at `rev`, as `dvc.api.read` opens it, but once per process: `dvc.api.read` opens
    the repo at the revision and indexes its whole stage graph for each file (0.5 CPU-s at 39 stages), and the gate,
    `size-subsets` and `compare` read several files of every use case at the same revision."""
    from dvc.fs.dvc import DVCFileSystem
    from dvc.repo import Repo

    repo = Repo.open(root, rev=rev, subrepos=True, uninitialized=True)
    atexit.register(repo.close)
    return DVCFileSystem(repo=repo, subrepos=True)


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def snapshot(root: Path, use_case: str, name: str, rev: str | None, run_rows: bool = False) -> Snapshot:
    """The use case's results at `rev` (None: the workspace), with the run's per-row outputs when `run_rows`;
    CompareError when it has none there."""
    base = f"data/{use_case}"
    try:
        metrics = json.loads(read_at(root, f"{base}/eval/metrics.json", rev))
        run = json.loads(read_at(root, f"{base}/run/summary.json", rev))
        variant = metrics.get("variant")
        if variant is None:
            raise CompareError(f"{name}: {base}/eval/metrics.json predates variant comparison (no 'variant')")
        rows = jsonl(read_at(root, f"{base}/eval/rows/{variant}.jsonl", rev))
        outputs = jsonl(read_at(root, f"{base}/run/outputs/{variant}.jsonl", rev)) if run_rows else []
    except (FileNotFoundError, OSError) as exc:
        raise CompareError(f"{name}: no results of {use_case} ({exc})") from None
    return Snapshot(label=name, variant=variant, rows=rows, metrics=metrics, run=run, run_rows=outputs)


def compare(
    snapshots: Sequence[Snapshot], specs: Sequence[headline.MetricSpec], columns: Columns
) -> tuple[list[VariantReport], list[dict[str, Any]]]:
    """The report parts for `snapshots` (the first is the baseline) and their rows side by side."""
    labels = [f"{s.label} ({s.variant})" for s in snapshots]
    if len(set(labels)) != len(labels):
        raise CompareError(f"each revision may appear once, got {', '.join(labels)}")
    results = headline.headline(specs, dict(zip(labels, (s.rows for s in snapshots), strict=True)), labels[0])
    results = headline.adjust(results, "fdr_bh")  # one family: every revision x metric against the first
    parts = []
    for label, snap in zip(labels, snapshots, strict=True):
        metrics = {**snap.metrics, "headline": {name: r.as_dict() for name, r in results[label].items()}}
        parts.append(VariantReport(label, flatten_rows(snap.rows, columns), metrics, snap.run))
    # side_by_side compares the first part with the last; with more, the page shows every part's answers.
    return parts, side_by_side(parts, columns.inputs)


def compare_use_case(
    root: Path, use_case: str, config: dict[str, Any], refs: Sequence[tuple[str, str | None]], out: Path, dpi: int
) -> tuple[Path, list[VariantReport]]:
    """Write `<out>/<use_case>.html` and `.csv` comparing the revisions `refs` ((name, rev) pairs)."""
    specs = headline.parse_specs(config.get("metrics"), f"use_cases.{use_case}.metrics")
    parts, rows = compare(
        [snapshot(root, use_case, name, rev) for name, rev in refs], specs, Columns.from_config(config)
    )
    page = out / f"{use_case}.html"
    title = f"{use_case}: {' vs '.join(name for name, _ in refs)}"
    context = {"baseline": parts[0].name, "compared": ", ".join(p.name for p in parts[1:])}
    write_text(page, reporting.render_html(title, context, parts, rows, dpi=dpi, max_rows=10_000))
    write_text(out / f"{use_case}.csv", reporting.to_csv(rows))
    return page, parts
