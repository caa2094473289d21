"""Headline metrics: declared per use case, computed per variant from the evaluation's per-row outputs.

Each headline metric gets a seeded 95% bootstrap confidence interval, and each variant a paired comparison
with the baseline variant on the rows both evaluated: McNemar's exact test when the per-row values are
pass/fail, a paired bootstrap otherwise. Declared in `use_cases.<uc>.metrics` (conf/use_cases/<uc>.yaml):

    metrics:
      accuracy: correct                      # the mean of a per-row output (True counts 1); None rows skipped
      exact_f1: {f1: {tp: counts.exact_tp, predicted: counts.predicted, gold: counts.gold}}
      precision: {ratio: {numerator: counts.tp, denominator: counts.predicted}}   # sum / sum over rows
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from stages.metrics import stats

Kind = Literal["mean", "ratio", "f1"]
_FIELDS: dict[str, tuple[str, ...]] = {"ratio": ("numerator", "denominator"), "f1": ("tp", "predicted", "gold")}


class MetricSpecError(ValueError):
    """A `metrics` entry in the config that cannot be used; the message names the entry."""


@dataclass(frozen=True)
class MetricSpec:
    """One headline metric: how to compute it from the per-row evaluation outputs at `fields` (dotted paths)."""

    name: str
    kind: Kind
    fields: tuple[str, ...]

    def statistic(self, table: np.ndarray) -> float:
        """The metric over a table of rows (one column per field)."""
        if self.kind == "mean":
            return float(table[:, 0].mean())
        if self.kind == "ratio":
            denominator = table[:, 1].sum()
            return float(table[:, 0].sum() / denominator) if denominator else 0.0
        total = table[:, 1].sum() + table[:, 2].sum()  # F1 = 2 tp / (predicted + gold)
        return float(2 * table[:, 0].sum() / total) if total else 0.0


def parse_specs(block: Mapping[str, Any] | None, where: str) -> list[MetricSpec]:
    """The headline metrics declared at `where` (e.g. 'use_cases.ner.metrics'); errors name the entry."""
    specs = []
    for name, spec in (block or {}).items():
        if isinstance(spec, str) and spec:
            specs.append(MetricSpec(name, "mean", (spec,)))
            continue
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in _FIELDS:
            raise MetricSpecError(
                f"{where}.{name}: expected a per-row output name, {{ratio: {{numerator, denominator}}}} or "
                f"{{f1: {{tp, predicted, gold}}}}, got {spec!r}"
            )
        kind, fields = next(iter(spec.items()))
        wanted = _FIELDS[kind]
        if not isinstance(fields, Mapping) or set(fields) != set(wanted):
            raise MetricSpecError(f"{where}.{name}.{kind}: expected the keys {', '.join(wanted)}, got {fields!r}")
        specs.append(MetricSpec(name, kind, tuple(str(fields[key]) for key in wanted)))
    return specs


def row_value(evaluation: Mapping[str, Any] | None, path: str) -> float | None:
    """The number at dotted `path` in one row's evaluation outputs (True -> 1.0); None when absent or None."""
    node: Any = evaluation
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if node is None or isinstance(node, str):
        return None
    return float(node)


def table(spec: MetricSpec, rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], np.ndarray]:
    """The row ids and per-row values of `spec` for the evaluated rows that have every value."""
    ids, values = [], []
    for row in rows:
        cells = [row_value(row.get("eval"), field) for field in spec.fields]
        if all(cell is not None for cell in cells):
            ids.append(row["row_id"])
            values.append(cells)
    return ids, np.asarray(values, dtype=float).reshape(len(values), len(spec.fields))


def _is_pass_fail(*tables: np.ndarray) -> bool:
    return all(np.isin(t, (0.0, 1.0)).all() for t in tables)


@dataclass(frozen=True)
class MetricResult:
    """A headline metric of one variant: its value with CI, and (for non-baseline variants) the comparison."""

    interval: stats.Interval | None  # None when no row had the values
    rows: int
    comparison: stats.Comparison | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON for metrics.json: value, ci_low, ci_high, rows (+ delta, p_value, verdict vs the baseline)."""
        out: dict[str, Any] = {"value": None, "ci_low": None, "ci_high": None, "rows": self.rows}
        if self.interval is not None:
            out.update(self.interval.as_dict())
        if self.comparison is not None:
            c = self.comparison
            out.update({"delta": round(c.effect, 4), "p_value": round(c.p_value, 4), "verdict": c.verdict,
                        "test": c.test})  # fmt: skip
        return out


def evaluate_metric(spec: MetricSpec, rows: Sequence[Mapping[str, Any]], seed: int = 0) -> MetricResult:
    """A variant's value of `spec` with its bootstrap CI."""
    _, values = table(spec, rows)
    if not len(values):
        return MetricResult(None, 0)
    statistic = None if spec.kind == "mean" else spec.statistic
    data = values[:, 0] if spec.kind == "mean" else values
    return MetricResult(stats.bootstrap_ci(data, seed=seed, statistic=statistic), len(values))


def compare_metric(
    spec: MetricSpec, baseline: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]], seed: int = 0
) -> stats.Comparison | None:
    """The candidate against the baseline on the rows both have values for (None when they share no row)."""
    base_ids, base_values = table(spec, baseline)
    cand_ids, cand_values = table(spec, candidate)
    common = sorted(set(base_ids) & set(cand_ids))
    if not common:
        return None
    base = base_values[[base_ids.index(i) for i in common]]
    cand = cand_values[[cand_ids.index(i) for i in common]]
    if spec.kind == "mean" and _is_pass_fail(base, cand):
        return stats.mcnemar_exact(list(base[:, 0] == 1), list(cand[:, 0] == 1))
    if spec.kind == "mean":
        return stats.paired_bootstrap(base[:, 0], cand[:, 0], seed=seed)
    return stats.paired_bootstrap(base, cand, seed=seed, statistic=spec.statistic)


def headline(
    specs: Sequence[MetricSpec], rows_by_variant: Mapping[str, Sequence[Mapping[str, Any]]], baseline: str
) -> dict[str, dict[str, MetricResult]]:
    """{variant: {metric: result}}: every declared metric of every variant, compared with `baseline`."""
    results: dict[str, dict[str, MetricResult]] = {}
    for variant, rows in rows_by_variant.items():
        results[variant] = {}
        for spec in specs:
            result = evaluate_metric(spec, rows)
            if variant != baseline and baseline in rows_by_variant:
                comparison = compare_metric(spec, rows_by_variant[baseline], rows)
                result = MetricResult(result.interval, result.rows, comparison)
            results[variant][spec.name] = result
    return results


def describe(result: MetricResult) -> str:
    """One line for logs and PR comments: '0.569 [0.45, 0.68] on 72 rows; +0.042 vs baseline, p=0.31 (...)'."""
    if result.interval is None:
        return "no rows with values"
    i = result.interval
    text = f"{i.estimate:.3f} [{i.low:.3f}, {i.high:.3f}] on {result.rows} rows"
    if result.comparison is not None:
        c = result.comparison
        text += f"; {c.effect:+.3f} vs baseline, p={c.p_value:.3g} ({c.verdict}, {c.test})"
    return text
