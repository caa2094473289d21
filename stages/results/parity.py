"""Parity of two flows of one use case (e.g. its prompt flow flow and the MAF workflow `llmops migrate` wrote):
do they behave the same on the same rows?

A use case declares what it must match in conf/ (`parity: {against: <use case>, margin: 0.02, alpha: 0.05}`):
both use cases evaluate the same dataset rows, so each row pairs up. For each headline metric: the paired
difference (candidate - baseline) with its 95% paired-bootstrap CI, and an equivalence verdict at +-margin:
two one-sided tests (stages/metrics/equivalence.py: TOST with the variance floor, rows needed for 80% power)
for a metric of one per-row value; for a ratio or F1 (no per-row value), equivalent when the bootstrap CI lies
inside +-margin, not equivalent when it lies outside, else inconclusive. Plus the share of rows whose run
outputs agree exactly, and of rows whose prediction (`report.prediction`) agrees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.metrics import equivalence, headline, power, stats


class ParityError(ValueError):
    """Two use cases that cannot be paired (no parity config, no shared rows); the message says why."""


@dataclass(frozen=True)
class MetricParity:
    metric: str
    baseline: float
    candidate: float
    difference: stats.Interval  # candidate - baseline, 95% paired bootstrap
    verdict: str  # equivalent | not equivalent | inconclusive
    test: str  # "TOST" or "bootstrap CI"
    p_value: float | None
    rows: int
    rows_needed: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "baseline": round(self.baseline, 4), "candidate": round(self.candidate, 4),
                "difference": self.difference.as_dict(), "verdict": self.verdict, "test": self.test,
                "p_value": None if self.p_value is None else round(self.p_value, 4), "rows": self.rows,
                "rows_needed": self.rows_needed}  # fmt: skip


@dataclass(frozen=True)
class Parity:
    baseline: str
    candidate: str
    margin: float
    rows: int  # rows both evaluated
    outputs_agree: float  # share of those rows whose run outputs are identical
    predictions_agree: float  # share whose prediction output is identical
    metrics: list[MetricParity]

    @property
    def verdict(self) -> str:
        """equivalent when every metric is; not equivalent when one is not; else inconclusive."""
        verdicts = {m.verdict for m in self.metrics}
        if equivalence.NOT_EQUIVALENT in verdicts:
            return equivalence.NOT_EQUIVALENT
        return equivalence.EQUIVALENT if verdicts == {equivalence.EQUIVALENT} else equivalence.INCONCLUSIVE

    def as_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "candidate": self.candidate, "margin": self.margin, "rows": self.rows,
                "outputs_agree": round(self.outputs_agree, 4), "predictions_agree": round(self.predictions_agree, 4),
                "verdict": self.verdict, "metrics": [m.as_dict() for m in self.metrics]}  # fmt: skip


def settings(config: Mapping[str, Any], name: str) -> tuple[str, float, float]:
    """(against, margin, alpha) of a use case's `parity` block; ParityError without one."""
    block = config.get("parity")
    if not block:
        raise ParityError(f"{name} has no parity block in conf/use_cases/{name}.yaml (parity: {{against: <use case>}})")
    return str(block["against"]), float(block.get("margin", 0.02)), float(block.get("alpha", 0.05))


def _metric(spec: headline.MetricSpec, base_rows: Sequence[Mapping[str, Any]],
            cand_rows: Sequence[Mapping[str, Any]], margin: float, alpha: float) -> MetricParity | None:  # fmt: skip
    base_ids, base_table = headline.table(spec, base_rows)
    cand_ids, cand_table = headline.table(spec, cand_rows)
    shared = sorted(set(base_ids) & set(cand_ids))
    if not shared:
        return None
    base = base_table[[base_ids.index(i) for i in shared]]
    cand = cand_table[[cand_ids.index(i) for i in shared]]
    if spec.kind == "mean":
        comparison = stats.paired_bootstrap(base[:, 0], cand[:, 0], alpha)
        tost = equivalence.tost(power.paired(base[:, 0], cand[:, 0]), margin, alpha)
        verdict, test, p_value, needed = tost.verdict, "TOST", tost.p_value, tost.rows_needed
    else:
        comparison = stats.paired_bootstrap(base, cand, alpha, statistic=spec.statistic)
        interval = comparison.interval
        assert interval is not None
        if -margin < interval.low and interval.high < margin:
            verdict = equivalence.EQUIVALENT
        elif interval.low >= margin or interval.high <= -margin:
            verdict = equivalence.NOT_EQUIVALENT
        else:
            verdict = equivalence.INCONCLUSIVE
        test, p_value, needed = "bootstrap CI", None, None
    interval = comparison.interval or stats.Interval(comparison.effect, comparison.effect, comparison.effect)
    return MetricParity(spec.name, spec.statistic(base), spec.statistic(cand), interval, verdict, test, p_value,
                        len(shared), needed)  # fmt: skip


def parity(
    specs: Sequence[headline.MetricSpec], names: tuple[str, str], eval_rows: tuple[list[dict], list[dict]],
    run_rows: tuple[list[dict], list[dict]], prediction: str, margin: float, alpha: float = 0.05,
) -> Parity:  # fmt: skip
    """Parity of the candidate (second) against the baseline (first), from each one's evaluated rows (eval/rows)
    and run outputs (run/outputs) of its selected variant."""
    base_runs = {r["row_id"]: r for r in run_rows[0] if r.get("error") is None}
    cand_runs = {r["row_id"]: r for r in run_rows[1] if r.get("error") is None}
    shared = sorted(set(base_runs) & set(cand_runs))
    if not shared:
        raise ParityError(f"{names[0]} and {names[1]} answered no row in common: run both on the same dataset")
    same_outputs = [base_runs[i]["outputs"] == cand_runs[i]["outputs"] for i in shared]

    def predicted(run: Mapping[str, Any]) -> Any:
        return (run["outputs"] or {}).get(prediction)

    same_prediction = [predicted(base_runs[i]) == predicted(cand_runs[i]) for i in shared]
    metrics = [m for spec in specs if (m := _metric(spec, *eval_rows, margin, alpha)) is not None]
    return Parity(names[0], names[1], margin, len(shared), float(np.mean(same_outputs)),
                  float(np.mean(same_prediction)), metrics)  # fmt: skip


def markdown(result: Parity) -> str:
    """The parity block of a report or PR comment."""
    lines = [
        f"**Parity: {result.candidate} vs {result.baseline}: {result.verdict.upper()}** (margin +-{result.margin:g} "
        f"per metric; {result.rows} shared rows; run outputs identical on {result.outputs_agree:.1%}, predictions on "
        f"{result.predictions_agree:.1%})",
        "",
        "| metric | baseline | candidate | difference [95% CI] | test | verdict | rows needed |",
        "| --- | ---: | ---: | --- | --- | --- | ---: |",
    ]
    for m in result.metrics:
        d = m.difference
        p = f", p={m.p_value:.3g}" if m.p_value is not None else ""
        needed = "-" if m.rows_needed is None else str(m.rows_needed)
        lines.append(f"| {m.metric} | {m.baseline:.3f} | {m.candidate:.3f} | {d.estimate:+.3f} [{d.low:+.3f}, "
                     f"{d.high:+.3f}] | {m.test}{p} | {m.verdict} | {needed} |")  # fmt: skip
    return "\n".join(lines) + "\n"
