"""The quality gate: a use case's results checked alone (error rate, floors) and against a baseline revision.

Thresholds live in `conf/env/<env>.yaml` under `gate` (`defaults`, overridden per use case). Against the
baseline, every check is paired on the rows both revisions evaluated (stable row ids), so a PR's 12-row subset
is compared with the same 12 rows of main's full run:

- quality: fails only on a significant `worse` (McNemar / paired bootstrap, as in the reports) whose drop is
  larger than `max_drop`;
- cost: the flow's tokens per row (prompt + completion, cached answers counted at their original usage);
- p95 latency: over the rows the LLM answered, since an answer from the LLM cache takes no LLM time.

Pure: snapshots and thresholds in, checks out; the markdown and terminal tables are rendered from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stages.core import reporting
from stages.core.compare import CompareError, Snapshot
from stages.metrics import headline, stats

PASS, FAIL, SKIP = "pass", "FAIL", "skip"
_DEFAULT_KEYS = ("floors", "max_drop", "max_cost_increase", "max_p95_latency_increase", "latency_min_rows")


class GateConfigError(ValueError):
    """A `gate` block that cannot be used; the message names the file and the key."""


# What stops the gate from running at all (bad config, an unknown revision), as opposed to a failed check.
ERRORS = (GateConfigError, CompareError, headline.MetricSpecError)


@dataclass(frozen=True)
class Thresholds:
    """One use case's limits: `defaults` with the use case's overrides applied."""

    max_error_rate: float
    floors: Mapping[str, float] = field(default_factory=dict)
    max_drop: float = 0.05
    max_drop_by_metric: Mapping[str, float] = field(default_factory=dict)
    max_cost_increase: float | None = None
    max_p95_latency_increase: float | None = None
    latency_min_rows: int = 5

    def drop_limit(self, metric: str) -> float:
        return self.max_drop_by_metric.get(metric, self.max_drop)


def _number(value: Any, where: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise GateConfigError(f"{where}: expected a number >= 0{' or null' if optional else ''}, got {value!r}")
    return float(value)


def _numbers(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise GateConfigError(f"{where}: expected {{metric: number}}, got {value!r}")
    return {str(metric): float(_number(limit, f"{where}.{metric}") or 0.0) for metric, limit in value.items()}


def _apply(base: dict[str, Any], block: Any, where: str) -> dict[str, Any]:
    """`base` with the keys of `block` (one of `defaults` or a use case's) checked and applied."""
    if not isinstance(block, Mapping):
        raise GateConfigError(f"{where}: expected a mapping, got {block!r}")
    out = dict(base)
    for key, value in block.items():
        at = f"{where}.{key}"
        if key == "floors":
            out["floors"] = {**out.get("floors", {}), **_numbers(value, at)}
        elif key == "max_drop" and isinstance(value, Mapping):
            out["max_drop_by_metric"] = {**out.get("max_drop_by_metric", {}), **_numbers(value, at)}
        elif key in ("max_drop", "max_cost_increase", "max_p95_latency_increase"):
            out[key] = _number(value, at, optional=key != "max_drop")
        elif key == "latency_min_rows":
            out[key] = int(_number(value, at) or 0)
        else:
            raise GateConfigError(f"{at}: unknown key (known: {', '.join(_DEFAULT_KEYS)})")
    return out


def parse_thresholds(block: Any, use_cases: Sequence[str], where: str) -> dict[str, Thresholds]:
    """Every use case's thresholds from a `gate` block; `where` names it in errors (e.g. 'conf/env/pr.yaml: gate')."""
    if not isinstance(block, Mapping):
        raise GateConfigError(f"{where}: missing or not a mapping (max_error_rate, defaults, use_cases)")
    if unknown := sorted(set(block) - {"max_error_rate", "defaults", "use_cases"}):
        raise GateConfigError(f"{where}.{unknown[0]}: unknown key (known: max_error_rate, defaults, use_cases)")
    base = {"max_error_rate": _number(block.get("max_error_rate"), f"{where}.max_error_rate")}
    base = _apply(base, block.get("defaults") or {}, f"{where}.defaults")
    overrides = block.get("use_cases") or {}
    if not isinstance(overrides, Mapping):
        raise GateConfigError(f"{where}.use_cases: expected {{use case: limits}}, got {overrides!r}")
    if unknown := sorted(set(overrides) - set(use_cases)):
        raise GateConfigError(f"{where}.use_cases.{unknown[0]}: no such use case (known: {', '.join(use_cases)})")
    return {uc: Thresholds(**_apply(base, overrides.get(uc) or {}, f"{where}.use_cases.{uc}")) for uc in use_cases}


@dataclass(frozen=True)
class Check:
    """One line of the gate's table. Values are already formatted for display."""

    use_case: str
    check: str
    value: str
    baseline: str
    limit: str
    verdict: str  # PASS, FAIL or SKIP
    note: str = ""


@dataclass(frozen=True)
class MetricDiff:
    """A headline metric at the baseline and the candidate, on the rows both evaluated, with the paired test."""

    metric: str
    baseline: float | None
    candidate: float | None
    comparison: stats.Comparison | None


@dataclass(frozen=True)
class Flip:
    """A row graded differently by the two revisions (stable row id; old and new prediction)."""

    row_id: str
    kind: str  # reporting.FIXED or reporting.BROKEN
    label: str
    old: str
    new: str


@dataclass(frozen=True)
class Usage:
    """Cost and latency of one revision, on the rows both revisions ran."""

    tokens_per_row: float | None
    p95_latency_s: float | None
    llm_answered_rows: int  # rows whose LLM requests all went to the LLM (the latency sample)


@dataclass
class UseCaseResult:
    """Everything the gate and the PR comment say about one use case."""

    use_case: str
    checks: list[Check]
    diffs: list[MetricDiff] = field(default_factory=list)
    flips: list[Flip] = field(default_factory=list)
    usage: tuple[Usage, Usage] | None = None  # (baseline, candidate)
    baseline_missing: str | None = None  # why there is nothing to compare with

    @property
    def passed(self) -> bool:
        return all(check.verdict != FAIL for check in self.checks)


def _fmt(value: float | None, rate: bool) -> str:
    return reporting.format_value(value, rate)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.0%}"


def error_check(use_case: str, rows: Sequence[Mapping[str, Any]], limit: float) -> Check:
    """Rows whose run or evaluation failed, as a share of the rows."""
    failed = sum(1 for row in rows if row.get("run_error") or row.get("eval_error"))
    rate = failed / len(rows) if rows else 1.0
    note = f"{failed} of {len(rows)} rows failed" if rows else "no rows"
    return Check(use_case, "error rate", f"{rate:.1%}", "", f"<= {limit:.1%}", PASS if rate <= limit else FAIL, note)


def floor_checks(
    use_case: str, candidate: Snapshot, specs: Sequence[headline.MetricSpec], floors: Mapping[str, float]
) -> list[Check]:
    """Each floored headline metric (the candidate's own value over all its rows) against its floor."""
    declared = [spec.name for spec in specs]
    checks = []
    for metric, floor in floors.items():
        if metric not in declared:
            raise GateConfigError(
                f"gate floors of {use_case}: {metric} is not a headline metric (declared: {', '.join(declared)})"
            )
        value = (candidate.metrics.get("headline") or {}).get(metric, {}).get("value")
        rate = floor <= 1 and (value is None or value <= 1)
        verdict = PASS if value is not None and value >= floor else FAIL
        note = "" if value is not None else "no value in eval/metrics.json"
        checks.append(
            Check(use_case, f"floor {metric}", _fmt(value, rate), "", f">= {_fmt(floor, rate)}", verdict, note)
        )
    return checks


def metric_diffs(specs: Sequence[headline.MetricSpec], baseline: Snapshot, candidate: Snapshot) -> list[MetricDiff]:
    """Each headline metric on the rows both revisions evaluated, with the paired comparison."""
    diffs = []
    for spec in specs:
        base_ids, base_values = headline.table(spec, baseline.rows)
        cand_ids, cand_values = headline.table(spec, candidate.rows)
        shared = sorted(set(base_ids) & set(cand_ids))
        if not shared:
            diffs.append(MetricDiff(spec.name, None, None, None))
            continue
        base = base_values[[base_ids.index(i) for i in shared]]
        cand = cand_values[[cand_ids.index(i) for i in shared]]
        comparison = headline.compare_metric(spec, baseline.rows, candidate.rows)
        diffs.append(MetricDiff(spec.name, spec.statistic(base), spec.statistic(cand), comparison))
    return diffs


def quality_checks(use_case: str, diffs: Sequence[MetricDiff], thresholds: Thresholds) -> list[Check]:
    """Fail a metric only on a significant `worse` whose drop exceeds its `max_drop`."""
    checks = []
    for diff in diffs:
        limit = thresholds.drop_limit(diff.metric)
        rate = all(v is None or v <= 1 for v in (diff.baseline, diff.candidate)) and limit < 1
        shown_limit = f"drop <= {_fmt(limit, rate)} unless n.s."
        c = diff.comparison
        if c is None:
            checks.append(
                Check(use_case, f"quality {diff.metric}", "n/a", "n/a", shown_limit, SKIP, "no row has a value in both")
            )
            continue
        failed = c.verdict == stats.WORSE and -c.effect > limit
        delta = f"{c.effect:+.1%}" if rate else f"{c.effect:+.2f}"
        note = f"{delta}, {c.verdict} (p={c.p_value:.3f}, {c.test}, {c.rows} rows)"
        value, base = _fmt(diff.candidate, rate), _fmt(diff.baseline, rate)
        checks.append(
            Check(use_case, f"quality {diff.metric}", value, base, shown_limit, FAIL if failed else PASS, note)
        )
    return checks


def usage(snapshot: Snapshot, row_ids: set[str]) -> Usage:
    """Tokens per row and p95 latency of the rows in `row_ids` (latency: rows the LLM answered, not the cache)."""
    rows = [row for row in snapshot.run_rows if row["row_id"] in row_ids]
    llm = [row["llm"] for row in rows if isinstance(row.get("llm"), Mapping)]
    tokens = sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in llm) / len(llm) if llm else None
    answered = [
        row["latency_s"]
        for row in rows
        if not row.get("error") and isinstance(row.get("llm"), Mapping)
        and row["llm"].get("requests", 0) > 0 and row["llm"].get("cache_hits", 0) == 0
    ]  # fmt: skip
    p95 = float(np.percentile(answered, 95, method="higher")) if answered else None
    return Usage(tokens, p95, len(answered))


def _increase_check(
    use_case: str, name: str, base: float | None, cand: float | None, limit: float | None, unit: str, why: str = ""
) -> Check:
    if limit is None:
        return Check(use_case, name, _unit(cand, unit), _unit(base, unit), "none", SKIP, "no limit set")
    shown_limit = f"<= +{limit:.0%}"
    if why or base is None or cand is None:
        return Check(use_case, name, _unit(cand, unit), _unit(base, unit), shown_limit, SKIP, why or "no data")
    change = (cand - base) / base if base else (0.0 if cand == 0 else float("inf"))
    verdict = PASS if change <= limit else FAIL
    return Check(use_case, name, _unit(cand, unit), _unit(base, unit), shown_limit, verdict, f"{_pct(change)}")


def _unit(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} s" if unit == "s" else f"{value:.1f}"


def cost_latency_checks(
    use_case: str, baseline: Snapshot, candidate: Snapshot, thresholds: Thresholds
) -> tuple[list[Check], tuple[Usage, Usage]]:
    shared = {row["row_id"] for row in baseline.run_rows} & {row["row_id"] for row in candidate.run_rows}
    base, cand = usage(baseline, shared), usage(candidate, shared)
    few = min(base.llm_answered_rows, cand.llm_answered_rows)
    why = ""
    if few < thresholds.latency_min_rows:
        why = (
            f"too few rows answered by the LLM rather than its cache ({base.llm_answered_rows} baseline, "
            f"{cand.llm_answered_rows} candidate; need {thresholds.latency_min_rows})"
        )
    checks = [
        _increase_check(use_case, "tokens/row", base.tokens_per_row, cand.tokens_per_row,
                        thresholds.max_cost_increase, "tokens"),
        _increase_check(use_case, "p95 latency", base.p95_latency_s, cand.p95_latency_s,
                        thresholds.max_p95_latency_increase, "s", why),
    ]  # fmt: skip
    return checks, (base, cand)


def flips(baseline: Snapshot, candidate: Snapshot, columns: reporting.Columns) -> list[Flip]:
    """Rows fixed or broken by the candidate, broken first, in the baseline's row order."""
    old = {r["row_id"]: r for r in reporting.flatten_rows(baseline.rows, columns)}
    found = []
    for new in reporting.flatten_rows(candidate.rows, columns):
        before = old.get(new["row_id"])
        if before is None:
            continue
        kind = reporting.flip(before, new)
        if kind in (reporting.FIXED, reporting.BROKEN):
            found.append(
                Flip(new["row_id"], kind, str(new["label"]), str(before["prediction"]), str(new["prediction"]))
            )
    return sorted(found, key=lambda f: f.kind != reporting.BROKEN)


def assess(
    use_case: str,
    specs: Sequence[headline.MetricSpec],
    columns: reporting.Columns,
    thresholds: Thresholds,
    candidate: Snapshot | None,
    baseline: Snapshot | None,
    candidate_missing: str = "",
    baseline_missing: str = "",
) -> UseCaseResult:
    """All checks of one use case. A missing baseline skips the relative checks; a missing candidate fails."""
    if candidate is None:
        why = candidate_missing or "no results"
        return UseCaseResult(use_case, [Check(use_case, "results", "none", "", "present", FAIL, why)])
    checks = [error_check(use_case, candidate.rows, thresholds.max_error_rate)]
    checks += floor_checks(use_case, candidate, specs, thresholds.floors)
    if baseline is None:
        why = baseline_missing or "no results"
        checks.append(Check(use_case, "baseline", "", "none", "", SKIP, f"relative checks skipped: {why}"))
        return UseCaseResult(use_case, checks, baseline_missing=why)
    diffs = metric_diffs(specs, baseline, candidate)
    checks += quality_checks(use_case, diffs, thresholds)
    more, pair = cost_latency_checks(use_case, baseline, candidate, thresholds)
    return UseCaseResult(use_case, checks + more, diffs, flips(baseline, candidate, columns), pair)


HEADER = ("use case", "check", "value", "baseline", "limit", "verdict", "note")


def _cells(check: Check) -> tuple[str, ...]:
    return (check.use_case, check.check, check.value, check.baseline, check.limit, check.verdict, check.note)


def md_cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def markdown_table(results: Sequence[UseCaseResult]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for result in results:
        for check in result.checks:
            cells = [md_cell(c) for c in _cells(check)]
            cells[5] = {PASS: "✅ pass", FAIL: "❌ **FAIL**", SKIP: "➖ skip"}[check.verdict]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(results: Sequence[UseCaseResult]) -> str:
    rows = [HEADER] + [_cells(check) for result in results for check in result.checks]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    lines = (
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows
    )
    return "\n".join(line.rstrip() for line in lines)


def summary_line(results: Sequence[UseCaseResult]) -> str:
    failed = [check for result in results for check in result.checks if check.verdict == FAIL]
    if not failed:
        return f"gate passed: {sum(len(r.checks) for r in results)} checks, none failed"
    names = ", ".join(f"{c.use_case} {c.check}" for c in failed)
    return f"gate FAILED: {len(failed)} of {sum(len(r.checks) for r in results)} checks ({names})"
