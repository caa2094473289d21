"""`llmops plan`: how many rows a use case needs to see a drop, and what today's rows can see.

From the last evaluation: the selected variant's rows, paired with the baseline variant's where the evaluation
has both (their discordance for pass/fail metrics, the spread of per-row differences for scores). With a single
variant no noise between revisions is observed, and a drop is planned as concentrated on the rows it breaks
(`stages.metrics.power`): the most optimistic plan, said so in the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stages.metrics import headline, power
from stages.results.charts import PowerCurve


@dataclass(frozen=True)
class MetricPlan:
    """One headline metric's plan."""

    metric: str
    rows: int
    kind: str  # power.PASS_FAIL or power.SCORE
    spread: float  # observed discordance (pass/fail) or sd of differences (score)
    paired_with: str | None  # the variant the noise was measured against (None: none)
    detect: float
    power_now: float  # of detecting `detect` with today's rows
    mde: float | None  # with today's rows (None: no drop is detectable)
    rows_needed: int | None  # to detect `detect` (None: more than power.MAX_ROWS)
    scale: float = 1.0  # 1: a rate, shown in points


def summary(
    spec: headline.MetricSpec, rows: Sequence[Mapping[str, Any]], other: Sequence[Mapping[str, Any]] | None
) -> tuple[power.Paired, bool] | None:
    """`spec`'s power summary over `rows`, with the noise measured against `other` on the rows both evaluated
    (True) or, without them, none (False); None when no row has a value."""
    ids, values = headline.table(spec, rows)
    if not ids:
        return None
    if other:
        other_ids, other_values = headline.table(spec, other)
        shared = sorted(set(ids) & set(other_ids))
        if shared:
            base = other_values[[other_ids.index(i) for i in shared]]
            cand = values[[ids.index(i) for i in shared]]
            found = power.table_summary(spec.kind, base, cand, headline.compare_metric(spec, other, rows))
            if found is not None:
                return power.Paired(found.kind, len(ids), found.effect, found.spread, found.scale), True
    found = power.table_summary(spec.kind, values, values)
    assert found is not None
    return found, False


def power_curve(
    spec: headline.MetricSpec,
    rows: Sequence[Mapping[str, Any]],
    other: Sequence[Mapping[str, Any]] | None,
    other_name: str,
) -> PowerCurve | None:
    """`spec`'s power curve for the report: the probability of detecting each drop, `rows` paired with `other`
    (the baseline variant `other_name`'s rows; the optimistic, concentrated-drop noise without them); None
    without values."""
    found = summary(spec, rows, other)
    if found is None:
        return None
    noise, paired = found
    drops = [noise.scale * i / 50 for i in range(51)]
    flipped = f"{noise.spread:.0%} of rows flipped" if noise.kind == power.PASS_FAIL else f"sd {noise.spread:.2f}"
    note = f"{flipped} against {other_name}" if paired else "one variant: a drop concentrated on the rows it breaks"
    return PowerCurve(spec.name, noise.rows, drops, power.power_curve(noise, drops), power.mde(noise),
                      noise.scale == 1.0, note)  # fmt: skip


def plan(
    specs: Sequence[headline.MetricSpec],
    rows: Sequence[Mapping[str, Any]],
    other: Sequence[Mapping[str, Any]] | None,
    other_name: str | None,
    detect: float,
    alpha: float = 0.05,
    target: float = power.POWER,
) -> list[MetricPlan]:
    """Every headline metric's plan from the evaluated `rows` (paired with `other`'s where given)."""
    plans = []
    for spec in specs:
        found = summary(spec, rows, other)
        if found is None:
            continue
        noise, paired = found
        paired_with = other_name if paired else None
        plans.append(
            MetricPlan(
                spec.name, noise.rows, noise.kind, noise.spread, paired_with, detect,
                power.power(noise, detect, alpha), power.mde(noise, alpha, target),
                power.rows_needed(noise, detect, alpha, target), noise.scale,
            )
        )  # fmt: skip
    return plans


def _amount(value: float, rate: bool) -> str:
    return f"{100 * value:.1f} pts" if rate else f"{value:.2f}"


def render(use_case: str, variant: str, plans: Sequence[MetricPlan], alpha: float, target: float) -> str:
    """The plan as text, one paragraph per metric."""
    lines = [f"{use_case} ({variant}): {target:.0%} power, two-sided alpha {alpha:g}"]
    for p in plans:
        rate = p.scale == 1.0
        noise = f"{p.spread:.1%} of rows flipped" if p.kind == power.PASS_FAIL else f"sd of differences {p.spread:.3f}"
        source = (
            f"{noise} against {p.paired_with}"
            if p.paired_with
            else "no second variant: the noise of a drop concentrated on the rows it breaks (optimistic)"
        )
        mde = "no drop" if p.mde is None else f"drops of {_amount(p.mde, rate)} or more"
        need = f"{p.rows_needed} rows" if p.rows_needed is not None else f"more than {power.MAX_ROWS} rows"
        lines += [
            f"  {p.metric} ({p.kind}, {source}):",
            f"    today's {p.rows} rows detect {mde}; a drop of {_amount(p.detect, rate)} with {p.power_now:.0%}",
            f"    to detect a drop of {_amount(p.detect, rate)}: {need}",
        ]
    return "\n".join(lines)
