"""The quality gate: a use case's results checked alone (error rate, floors) and against a baseline revision.

Thresholds live in `conf/env/<env>.yaml` under `gate` (`defaults`, overridden per use case). Against the
baseline, every check is paired on the rows both revisions evaluated (stable row ids), so a PR's 12-row subset
is compared with the same 12 rows of main's full run:

- quality: each headline metric's paired test (McNemar / paired bootstrap, as in the reports), with its minimum
  detectable effect (MDE, `stages.metrics.power`) beside it. FAIL: a significant drop not shown to be smaller than
  `max_drop`; pass: no such drop, and a drop of `max_drop` would have been detected (80% power); inconclusive:
  the rows cannot see a drop of `max_drop`, which fails, warns or passes by the `inconclusive` setting, for use
  cases the revision changed (`stages.results.changes`) and for those it did not;
- cost: the flow's tokens per row (prompt + completion, cached answers counted at their original usage);
- p95 latency: over the rows the LLM answered, since an answer from the LLM cache takes no LLM time.

Pure: snapshots and thresholds (stages/results/thresholds.py) in, checks out; stages/results/gate_tables.py renders
the markdown and terminal tables from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from stages.metrics import equivalence, headline, stats
from stages.results.compare import Snapshot
from stages.results.formatting import format_value
from stages.results.gate_quality import FAIL, INCONCLUSIVE, PASS, SKIP, Check, MetricDiff, Quality, judge, metric_diffs
from stages.results.gate_quality import quality_check as _quality_check
from stages.results.rows import BROKEN, FIXED, Columns, flatten_rows, flip
from stages.results.thresholds import EQUIVALENT as EQUIVALENT  # re-exported: the gate's names, one place
from stages.results.thresholds import ERRORS as ERRORS
from stages.results.thresholds import NO_DROP, GateConfigError, Thresholds
from stages.results.thresholds import NONINFERIOR as NONINFERIOR


@dataclass(frozen=True)
class Flip:
    """A row graded differently by the two revisions (stable row id; old and new prediction)."""

    row_id: str
    kind: str  # FIXED or BROKEN
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
    quality: list[Quality] = field(default_factory=list)
    thresholds: Thresholds | None = None
    changes: tuple[str, ...] | None = None  # what the revision changed in the use case (None: unknown)
    inert: str | None = None  # why the changes had no effect on these rows (see `inert`)
    parity: str | None = None  # the parity block (markdown, stages/results/parity.py) of a use case with `parity:`

    @property
    def changed(self) -> bool:
        """Whether the revision changed the use case's flow, prompts, data or model (unknown counts as changed),
        with an effect on its rows."""
        return (self.changes is None or bool(self.changes)) and not self.inert

    @property
    def passed(self) -> bool:
        return not any(check.fails for check in self.checks)


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
        shown, limit = format_value(value, rate), f">= {format_value(floor, rate)}"
        checks.append(Check(use_case, f"floor {metric}", shown, "", limit, verdict, note))
    return checks


def adjust(results: Sequence[UseCaseResult]) -> list[UseCaseResult]:
    """`results` with their quality checks decided together: Holm's adjustment over every compared (use case x
    metric) of the gate that requires no drop, the family-wise error at the gate's alpha."""
    from statsmodels.stats.multitest import multipletests

    compared = [(i, r, d) for i, r in enumerate(results) if r.thresholds is not None and r.thresholds.require == NO_DROP
                for d in r.diffs if d.comparison is not None]  # fmt: skip
    family = len(compared)
    adjusted: dict[tuple[int, str], float] = {}
    if compared:
        raw = [d.comparison.p_value for _, _, d in compared]  # type: ignore[union-attr]
        corrected = multipletests(raw, method="holm")[1]
        adjusted = {(i, d.metric): float(p) for (i, _, d), p in zip(compared, corrected, strict=True)}
    method = f"Holm/{family}"
    out = []
    for index, result in enumerate(results):
        limits = result.thresholds
        if limits is None or not result.diffs:
            out.append(result)
            continue
        policy = limits.inconclusive_policy(result.changed)
        qualities, checks = [], []
        for diff in result.diffs:
            limit = limits.drop_limit(diff.metric)
            quality = None
            if diff.comparison is not None:
                p = adjusted.get((index, diff.metric), diff.comparison.p_value)
                quality = judge(diff, limit, limits.alpha, p, family, policy, method, limits.require)
                qualities.append(quality)
            checks.append(_quality_check(result.use_case, diff, limit, quality, limits.alpha))
        by_name = {check.check: check for check in checks}
        merged = [by_name.pop(check.check, check) for check in result.checks]
        out.append(replace(result, checks=merged, quality=qualities))
    return out


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
    p95 = stats.percentile(answered, 95)
    p95 = float(p95) if p95 is not None else None
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


def flips(baseline: Snapshot, candidate: Snapshot, columns: Columns) -> list[Flip]:
    """Rows fixed or broken by the candidate, broken first, in the baseline's row order."""
    old = {r["row_id"]: r for r in flatten_rows(baseline.rows, columns)}
    found = []
    for new in flatten_rows(candidate.rows, columns):
        before = old.get(new["row_id"])
        if before is None:
            continue
        kind = flip(before, new)
        if kind in (FIXED, BROKEN):
            found.append(
                Flip(new["row_id"], kind, str(new["label"]), str(before["prediction"]), str(new["prediction"]))
            )
    return sorted(found, key=lambda f: f.kind != BROKEN)


def inert(candidate: Snapshot, diffs: Sequence[MetricDiff]) -> str | None:
    """Why a changed use case is unchanged in effect on its rows: every LLM request of the candidate's run was
    answered by the LLM cache (the model saw requests it had answered before, e.g. a prompt comment that renders
    away) and no row's headline values moved. None otherwise."""
    usage = [row.get("llm") for row in candidate.run_rows]
    if not usage or not diffs:
        return None
    cached = all(isinstance(u, Mapping) and 0 < u.get("requests", 0) <= u.get("cache_hits", 0) for u in usage)
    still = all(d.summary is not None and d.summary.spread == 0 and d.summary.effect == 0 for d in diffs)
    if not (cached and still):
        return None
    return f"no effect on these {len(usage)} rows: every LLM request was a cache hit and no metric value moved"


def assess(
    use_case: str,
    specs: Sequence[headline.MetricSpec],
    columns: Columns,
    thresholds: Thresholds,
    candidate: Snapshot | None,
    baseline: Snapshot | None,
    candidate_missing: str = "",
    baseline_missing: str = "",
    changes: Sequence[str] | None = None,
) -> UseCaseResult:
    """All checks of one use case. A missing baseline skips the relative checks; a missing candidate fails.
    `changes`: what the revision changed in the use case ([]: nothing; None: unknown, counted as changed). The
    quality checks are Holm-adjusted over this use case's metrics; `adjust` redoes them over the whole gate."""
    changed = None if changes is None else tuple(changes)
    if candidate is None:
        why = candidate_missing or "no results"
        return UseCaseResult(use_case, [Check(use_case, "results", "none", "", "present", FAIL, why)], changes=changed)
    checks = [error_check(use_case, candidate.rows, thresholds.max_error_rate)]
    checks += floor_checks(use_case, candidate, specs, thresholds.floors)
    if baseline is None:
        why = baseline_missing or "no results"
        checks.append(Check(use_case, "baseline", "", "none", "", SKIP, f"relative checks skipped: {why}"))
        return UseCaseResult(use_case, checks, baseline_missing=why, thresholds=thresholds, changes=changed)
    diffs = metric_diffs(specs, baseline, candidate)
    checks += [Check(use_case, f"quality {diff.metric}", "", "", "", SKIP) for diff in diffs]  # decided by adjust
    more, pair = cost_latency_checks(use_case, baseline, candidate, thresholds)
    why = inert(candidate, diffs) if changed is None or changed else None
    result = UseCaseResult(use_case, checks + more, diffs, flips(baseline, candidate, columns), pair,
                           thresholds=thresholds, changes=changed, inert=why)  # fmt: skip
    return adjust([result])[0]


def parity_check(use_case: str, result: Any) -> Check:
    """The gate's line for a parity.Parity: PASS when equivalent, FAIL when not, INCONCLUSIVE (not blocking)."""
    verdict = {equivalence.EQUIVALENT: PASS, equivalence.NOT_EQUIVALENT: FAIL}.get(result.verdict, INCONCLUSIVE)
    worst = max(result.metrics, key=lambda m: abs(m.difference.estimate), default=None)
    note = f"outputs identical on {result.outputs_agree:.0%} of {result.rows} rows"
    if worst is not None:
        d = worst.difference
        note += f"; largest difference {worst.metric} {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
        if result.verdict == equivalence.INCONCLUSIVE and worst.rows_needed:
            note += f"; about {worst.rows_needed} rows would show equivalence"
    return Check(use_case, f"parity vs {result.baseline}", result.verdict, result.baseline, f"+-{result.margin:g}",
                 verdict, note)  # fmt: skip
