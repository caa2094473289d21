"""The gate's quality checks: a headline metric's paired test read as a verdict, with its MDE and the rows needed.

Each headline metric is compared on the rows both revisions evaluated (`metric_diffs`); `judge` reads the paired
test against the use case's `max_drop` (or margin, for `noninferior` and `equivalent`) as PASS, FAIL or
INCONCLUSIVE, and `quality_check` makes it one line of the gate's table. `stages.results.gate` runs them over a
use case and adjusts the p-values over the whole gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stages.metrics import equivalence, headline, power, stats
from stages.results.compare import Snapshot
from stages.results.formatting import format_value
from stages.results.thresholds import NO_DROP, NONINFERIOR

PASS, FAIL, SKIP, INCONCLUSIVE = "pass", "FAIL", "skip", "inconclusive"


@dataclass(frozen=True)
class Check:
    """One line of the gate's table. Values are already formatted for display."""

    use_case: str
    check: str
    value: str
    baseline: str
    limit: str
    verdict: str  # PASS, FAIL, SKIP or INCONCLUSIVE
    note: str = ""
    blocking: bool = False  # an inconclusive check that fails the gate (policy `fail`)

    @property
    def fails(self) -> bool:
        return self.verdict == FAIL or (self.verdict == INCONCLUSIVE and self.blocking)


@dataclass(frozen=True)
class MetricDiff:
    """A headline metric at the baseline and the candidate, on the rows both evaluated, with the paired test."""

    metric: str
    baseline: float | None
    candidate: float | None
    comparison: stats.Comparison | None
    summary: power.Paired | None = None  # rows, effect and noise, for power and equivalence


@dataclass(frozen=True)
class Quality:
    """The gate's reading of one MetricDiff: verdict, adjusted p, MDE and rows needed, in one plain line."""

    metric: str
    verdict: str  # PASS, FAIL or INCONCLUSIVE
    blocking: bool  # an inconclusive verdict that fails the gate
    max_drop: float  # the drop to detect (no_drop) or the margin (noninferior, equivalent)
    p_value: float | None
    p_adjusted: float | None
    method: str  # the adjustment, e.g. "Holm over 12 checks"
    mde: float | None  # None: not even a drop of the whole scale is detectable
    rows: int
    rows_needed: int | None  # to detect max_drop, or to show the margin (None: more than power.MAX_ROWS)
    reading: str
    require: str = NO_DROP


def _fmt(value: float | None, rate: bool) -> str:
    return format_value(value, rate)


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
        diffs.append(MetricDiff(spec.name, spec.statistic(base), spec.statistic(cand), comparison,
                                power.table_summary(spec.kind, base, cand, comparison)))  # fmt: skip
    return diffs


def _amount(value: float, rate: bool) -> str:
    return f"{100 * value:.1f} pts" if rate else f"{value:.2f}"


def judge(
    diff: MetricDiff,
    limit: float,
    alpha: float,
    p_adjusted: float,
    family: int,
    policy: str,
    method: str = "",
    require: str = NO_DROP,
) -> Quality:
    """The verdict on one compared metric. A lone drop must beat Holm's first step, alpha / family: the MDE and
    the rows needed are computed at that level. `require` noninferior / equivalent: `limit` is the margin."""
    c, summary = diff.comparison, diff.summary
    assert c is not None
    rate = all(v is None or v <= 1 for v in (diff.baseline, diff.candidate)) and limit < 1
    if require != NO_DROP and summary is not None and limit > 0:
        return _margin_quality(diff, summary, limit, alpha, policy, require, rate)
    level = alpha / max(family, 1)
    mde = power.mde(summary, level) if summary is not None else None
    needed = power.rows_needed(summary, limit, level) if summary is not None and limit > 0 else None
    facts = dict(metric=diff.metric, max_drop=limit, p_value=c.p_value, p_adjusted=p_adjusted, method=method,
                 mde=mde, rows=c.rows, rows_needed=needed)  # fmt: skip
    drop = _amount(-c.effect, rate)
    if c.effect < 0 and p_adjusted < alpha:
        within = (
            summary is not None
            and limit > 0
            and (equivalence.noninferiority(summary, limit, alpha).verdict == equivalence.NON_INFERIOR)
        )
        if within:
            reading = f"down {drop}, significant but shown smaller than {_amount(limit, rate)}"
            return Quality(verdict=PASS, blocking=False, reading=reading, **facts)  # type: ignore[arg-type]
        reading = f"worse: down {drop} on {c.rows} rows, not shown smaller than {_amount(limit, rate)}"
        return Quality(verdict=FAIL, blocking=False, reading=reading, **facts)  # type: ignore[arg-type]
    seen = "can't tell any drop" if mde is None else f"can't tell below {_amount(mde, rate)}"
    if mde is not None and mde <= limit:
        reading = f"no drop of {_amount(mde, rate)} or more: {c.rows} rows see one 4 times in 5"
        return Quality(verdict=PASS, blocking=False, reading=reading, **facts)  # type: ignore[arg-type]
    need = f"{needed} rows" if needed is not None else f"more than {power.MAX_ROWS} rows"
    reading = f"{seen}: {c.rows} rows; a drop of {_amount(limit, rate)} needs {need}"
    if policy == "pass":
        reading += " (inconclusive, passed: `inconclusive` allows it here)"
    verdict = PASS if policy == "pass" else INCONCLUSIVE
    return Quality(verdict=verdict, blocking=policy == "fail", reading=reading, **facts)  # type: ignore[arg-type]


def _margin_quality(
    diff: MetricDiff, summary: power.Paired, margin: float, alpha: float, policy: str, require: str, rate: bool
) -> Quality:
    """Non-inferiority or equivalence (TOST) at `margin`: unadjusted, as the gate needs every such check to hold
    (an intersection-union test keeps alpha without adjustment)."""
    test = equivalence.noninferiority if require == NONINFERIOR else equivalence.tost
    found = test(summary, margin, alpha)
    shown, delta = _amount(margin, rate), _amount(abs(summary.effect), rate)
    facts = dict(metric=diff.metric, max_drop=margin, p_value=found.p_value, p_adjusted=None, method="", mde=None,
                 rows=found.rows, rows_needed=found.rows_needed, require=require)  # fmt: skip
    if found.verdict in (equivalence.NON_INFERIOR, equivalence.EQUIVALENT):
        claim = f"not worse by {shown}" if require == NONINFERIOR else f"within ±{shown}"
        reading = f"{found.verdict}: shown {claim} ({found.test} p={found.p_value:.3f})"
        return Quality(verdict=PASS, blocking=False, reading=reading, **facts)  # type: ignore[arg-type]
    if found.verdict in (equivalence.INFERIOR, equivalence.NOT_EQUIVALENT):
        moved = "down" if summary.effect < 0 else "up"
        reading = f"{found.verdict}: {moved} {delta}, beyond the margin of {shown}"
        return Quality(verdict=FAIL, blocking=False, reading=reading, **facts)  # type: ignore[arg-type]
    need = f"{found.rows_needed} rows" if found.rows_needed is not None else f"more than {power.MAX_ROWS} rows"
    claim = f"not worse by {shown}" if require == NONINFERIOR else f"within ±{shown}"
    reading = f"can't show {claim}: {found.rows} rows; it needs {need} ({found.test} p={found.p_value:.3f})"
    if policy == "pass":
        reading += " (inconclusive, passed: `inconclusive` allows it here)"
    verdict = PASS if policy == "pass" else INCONCLUSIVE
    return Quality(verdict=verdict, blocking=policy == "fail", reading=reading, **facts)  # type: ignore[arg-type]


def quality_check(use_case: str, diff: MetricDiff, limit: float, quality: Quality | None, alpha: float) -> Check:
    rate = all(v is None or v <= 1 for v in (diff.baseline, diff.candidate)) and limit < 1
    shown_limit = f"drop <= {_fmt(limit, rate)} unless n.s."
    if quality is not None and quality.require != NO_DROP:
        shown_limit = f"{'drop' if quality.require == NONINFERIOR else 'change'} < {_fmt(limit, rate)} shown"
    c = diff.comparison
    if c is None or quality is None:
        return Check(use_case, f"quality {diff.metric}", "n/a", "n/a", shown_limit, SKIP, "no row has a value in both")
    delta = f"{c.effect:+.1%}" if rate else f"{c.effect:+.2f}"
    significant = (quality.p_adjusted if quality.p_adjusted is not None else c.p_value) < alpha and c.effect != 0
    said = (stats.BETTER if c.effect > 0 else stats.WORSE) if significant else stats.NO_DIFFERENCE
    adjusted = f", {quality.method} p={quality.p_adjusted:.3f}" if quality.method else ""
    note = f"{delta}, {said} (p={c.p_value:.3f}{adjusted}, {c.test}, {c.rows} rows); {quality.reading}"
    value, base = _fmt(diff.candidate, rate), _fmt(diff.baseline, rate)
    return Check(use_case, f"quality {diff.metric}", value, base, shown_limit, quality.verdict, note,
                 blocking=quality.blocking)  # fmt: skip
