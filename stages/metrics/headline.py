"""Headline metrics: declared per use case, computed per variant from the evaluation's per-row outputs.

Each headline metric gets a seeded 95% bootstrap confidence interval, and each variant a paired comparison
with the baseline variant on the rows both evaluated: McNemar's exact test when the per-row values are
pass/fail, a paired bootstrap otherwise. Declared in `use_cases.<uc>.metrics` (conf/use_cases/<uc>.yaml):

    metrics:
      accuracy: correct                      # the mean of a per-row output (True counts 1); None rows skipped
      exact_f1: {f1: {tp: counts.exact_tp, predicted: counts.predicted, gold: counts.gold}}
      precision: {ratio: {numerator: counts.tp, denominator: counts.predicted}}   # sum / sum over rows

Per-row values are read as numbers by this mapping (`as_number`), so that prompt flow's stock evaluators' outputs
count as they mean:
- True / False: 1 / 0; a number: itself; a numeric string ("0.5"): its number;
- a grade string, case and surrounding space ignored: "correct", "pass", "passed", "yes", "true", "right",
  "match", "matched" count 1; "incorrect", "fail", "failed", "no", "false", "wrong", "mismatch", "error" count 0
  (eval-classification-accuracy's "Correct"/"Incorrect"); any other string or None: no value (the row is skipped);
- an object (a counts dict such as eval-entity-match-rate's `match_cnt`): its first entry, in its own order, that
  is a bool or a number (`exact_match` there); name another with a dotted path (`match_cnt.partial_match`);
- in a mean whose values are all -1, 0 or 1, -1 counts 0: the stock convention of "-1: the row failed" (the
  template's math evaluation), which the aggregations count as not correct, never a negative accuracy.
`value_notes` says which of these applied, for the evaluate stage's log.

With repeats (`bulk.repeats: k`, rows carrying `repeat`), a row's values are first averaged over its repeats:
the value, its CI (resampling rows, never row repeats) and the paired comparison (on the row means) are computed
over those row means. Each metric also reports its spread over the repeats (`Spread`: the metric computed on
each repeat alone; their mean, standard deviation, min and max) and how stable the rows are (the share of rows
whose values are identical in every repeat).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from stages.metrics import repeats, stats

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


PASS_GRADES = frozenset({"correct", "pass", "passed", "yes", "true", "right", "match", "matched"})
FAIL_GRADES = frozenset({"incorrect", "fail", "failed", "no", "false", "wrong", "mismatch", "error"})


def as_number(value: Any) -> float | None:
    """A per-row evaluation value as a number, by the mapping in this module's docstring (None: no value)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, str):
        grade = value.strip().lower()
        if grade in PASS_GRADES:
            return 1.0
        if grade in FAIL_GRADES:
            return 0.0
        try:
            number = float(grade)
        except ValueError:
            return None
        return number if np.isfinite(number) else None
    if isinstance(value, Mapping):
        key = first_number_key(value)
        return as_number(value[key]) if key is not None else None
    return None


def first_number_key(value: Mapping[str, Any]) -> str | None:
    """The first key of an object whose value is a bool or a number (a counts dict's `exact_match`)."""
    return next((key for key, item in value.items() if isinstance(item, bool | int | float)), None)


def _at(evaluation: Mapping[str, Any] | None, path: str) -> Any:
    node: Any = evaluation
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def row_value(evaluation: Mapping[str, Any] | None, path: str) -> float | None:
    """The number at dotted `path` in one row's evaluation outputs (see `as_number`); None when absent or None."""
    return as_number(_at(evaluation, path))


def _minus_one_fails(spec: MetricSpec, cells: list[list[float | None]]) -> bool:
    """A mean over -1/0/1 values with a -1 among them: -1 marks a failed row (counted 0)."""
    values = {cell[0] for cell in cells if cell[0] is not None}
    return spec.kind == "mean" and -1.0 in values and values <= {-1.0, 0.0, 1.0}


def table(spec: MetricSpec, rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], np.ndarray]:
    """The row ids and per-row values of `spec` for the evaluated rows that have every value; a row with repeats
    gets the mean of its repeats that have values (one line per row id, in order of first appearance)."""
    cells_of = [(row["row_id"], [row_value(row.get("eval"), field) for field in spec.fields]) for row in rows]
    minus_one_fails = _minus_one_fails(spec, [cells for _, cells in cells_of])
    by_row: dict[str, list[list[float]]] = {}
    for row_id, cells in cells_of:
        if all(cell is not None for cell in cells):
            if minus_one_fails:
                cells = [0.0 if cell == -1.0 else cell for cell in cells]
            by_row.setdefault(row_id, []).append(cells)  # type: ignore[arg-type]
    values = [np.mean(np.asarray(repeated, dtype=float), axis=0) for repeated in by_row.values()]
    return list(by_row), np.asarray(values, dtype=float).reshape(len(values), len(spec.fields))


def value_notes(spec: MetricSpec, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """How `spec`'s per-row values were read, where the mapping did more than take numbers: grade strings, an
    object's first number, -1 counted as 0, values that are not numbers (skipped)."""
    notes = []
    for field in spec.fields:
        raw = [_at(row.get("eval"), field) for row in rows]
        objects = [value for value in raw if isinstance(value, Mapping)]
        if objects and (key := first_number_key(objects[0])) is not None:
            notes.append(f"{field} is an object: its first number, {field}.{key}, is used (name another with a path)")
        elif objects:
            notes.append(f"{field} is an object without a number: no value (name one with {field}.<key>)")
        graded = PASS_GRADES | FAIL_GRADES
        grades = sorted({v.strip() for v in raw if isinstance(v, str) and v.strip().lower() in graded})
        if grades:
            notes.append(f"{field}: grade strings ({', '.join(grades)}) are read as 1 (correct, pass, yes...) or 0")
        skipped = sum(1 for v in raw if v is not None and row_value({"v": v}, "v") is None)
        if skipped:
            notes.append(f"{field}: {skipped} rows have a value that is not a number or a grade (skipped)")
    if _minus_one_fails(spec, [[row_value(row.get("eval"), spec.fields[0])] for row in rows]):
        notes.append(f"{spec.fields[0]}: -1 (the row failed) counts 0")
    return [f"{spec.name}: {note}" for note in notes]


@dataclass(frozen=True)
class Spread:
    """A metric over k repeats: its value on each repeat alone, and the share of rows identical in every repeat."""

    per_repeat: tuple[float, ...]
    stable: float  # rows whose values are the same in all k repeats (a repeat without values counts as different)

    @property
    def std(self) -> float:
        """The sample standard deviation of the per-repeat values."""
        return float(np.std(self.per_repeat, ddof=1)) if len(self.per_repeat) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        values = self.per_repeat
        return {
            "k": len(values), "mean": round(float(np.mean(values)), 4), "std": round(self.std, 4),
            "min": round(min(values), 4), "max": round(max(values), 4), "stable": round(self.stable, 4),
        }  # fmt: skip


def spread(spec: MetricSpec, rows: Sequence[Mapping[str, Any]]) -> Spread | None:
    """The spread of `spec` over the repeats in `rows` (None for rows without repeats, or when none has values)."""
    k = repeats.in_records(rows)
    if k == 1:
        return None
    per_repeat = []
    for repeat in range(k):
        _, values = table(spec, [row for row in rows if repeats.of(row) == repeat])
        if len(values):
            per_repeat.append(spec.statistic(values))
    cells: dict[str, dict[int, tuple[float | None, ...]]] = {}
    for row in rows:
        cell = tuple(row_value(row.get("eval"), field) for field in spec.fields)
        cells.setdefault(row["row_id"], {})[repeats.of(row)] = cell
    valued = [by_repeat for by_repeat in cells.values() if any(None not in c for c in by_repeat.values())]
    if not per_repeat or not valued:
        return None
    stable = sum(
        1 for by_repeat in valued
        if len(by_repeat) == k and None not in by_repeat[0] and len(set(by_repeat.values())) == 1
    )  # fmt: skip
    return Spread(tuple(per_repeat), stable / len(valued))


def _is_pass_fail(*tables: np.ndarray) -> bool:
    return all(np.isin(t, (0.0, 1.0)).all() for t in tables)


@dataclass(frozen=True)
class MetricResult:
    """A headline metric of one variant: its value with CI, and (for non-baseline variants) the comparison."""

    interval: stats.Interval | None  # None when no row had the values
    rows: int
    comparison: stats.Comparison | None = None
    spread: Spread | None = None  # with repeats only

    def as_dict(self) -> dict[str, Any]:
        """JSON for metrics.json: value, ci_low, ci_high, rows (+ delta, p_value, verdict vs the baseline; + the
        spread over repeats under `repeats`)."""
        out: dict[str, Any] = {"value": None, "ci_low": None, "ci_high": None, "rows": self.rows}
        if self.interval is not None:
            out.update(self.interval.as_dict())
        if self.comparison is not None:
            c = self.comparison
            out.update({"delta": round(c.effect, 4), "p_value": round(c.p_value, 4), "verdict": c.verdict,
                        "test": c.test})  # fmt: skip
            if c.p_adjusted is not None:
                out.update({"p_adjusted": round(c.p_adjusted, 4), "adjustment": c.adjustment})
        if self.spread is not None:
            out["repeats"] = self.spread.as_dict()
        return out


def evaluate_metric(spec: MetricSpec, rows: Sequence[Mapping[str, Any]], seed: int = 0) -> MetricResult:
    """A variant's value of `spec` with its bootstrap CI (over rows), and its spread over repeats if any."""
    _, values = table(spec, rows)
    if not len(values):
        return MetricResult(None, 0)
    statistic = None if spec.kind == "mean" else spec.statistic
    data = values[:, 0] if spec.kind == "mean" else values
    return MetricResult(
        stats.bootstrap_ci(data, seed=seed, statistic=statistic), len(values), spread=spread(spec, rows)
    )


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
                result = dataclasses.replace(result, comparison=comparison)
            results[variant][spec.name] = result
    return results


def adjust(
    results: dict[str, dict[str, MetricResult]], method: str = "fdr_bh", alpha: float = 0.05
) -> dict[str, dict[str, MetricResult]]:
    """`headline`'s results with every comparison (each variant x metric against the baseline) adjusted as one
    family (`stats.adjust`: Benjamini-Hochberg by default, for a sweep of variants)."""
    keys = [(v, m) for v, metrics in results.items() for m, r in metrics.items() if r.comparison is not None]
    adjusted = stats.adjust([results[v][m].comparison for v, m in keys], method, alpha)  # type: ignore[misc]
    out = {variant: dict(metrics) for variant, metrics in results.items()}
    for (variant, metric), comparison in zip(keys, adjusted, strict=True):
        out[variant][metric] = dataclasses.replace(out[variant][metric], comparison=comparison)
    return out


def describe(result: MetricResult) -> str:
    """One line for logs and PR comments: '0.569 [0.45, 0.68] on 72 rows; +0.042 vs baseline, p=0.31 (...)'."""
    if result.interval is None:
        return "no rows with values"
    i = result.interval
    text = f"{i.estimate:.3f} [{i.low:.3f}, {i.high:.3f}] on {result.rows} rows"
    if result.spread is not None:
        s = result.spread
        text += f" x {len(s.per_repeat)} repeats, std {s.std:.3f} [{min(s.per_repeat):.3f}, {max(s.per_repeat):.3f}]"
        text += f", {s.stable:.0%} of rows stable"
    if result.comparison is not None:
        c = result.comparison
        on = " (row means)" if result.spread is not None else ""
        text += f"; {c.effect:+.3f} vs baseline{on}, p={c.p_value:.3g} ({c.verdict}, {c.test})"
    return text


def compare_independent(
    spec: MetricSpec, baseline: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]], seed: int = 0
) -> stats.Comparison | None:
    """The candidate against the baseline when they saw different rows (e.g. the requests two deployments
    served): Fisher's exact test for pass/fail values, an unpaired bootstrap otherwise (None without rows)."""
    _, base = table(spec, baseline)
    _, cand = table(spec, candidate)
    if not len(base) or not len(cand):
        return None
    if spec.kind == "mean" and _is_pass_fail(base, cand):
        return stats.fisher_exact(list(base[:, 0] == 1), list(cand[:, 0] == 1))
    if spec.kind == "mean":
        return stats.unpaired_bootstrap(base[:, 0], cand[:, 0], seed=seed)
    return stats.unpaired_bootstrap(base, cand, seed=seed, statistic=spec.statistic)
