"""The row model of a use case's results, apart from any renderer: which columns hold what (`Columns`), one flat
record per row (`flatten_rows`), a variant's part of a comparison (`VariantReport`), rows side by side and how each
moved between variants (`flip`). The gate, the PR comment, compare, the CLI, production evaluation and the report
renderers all read rows through it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stages.data import datasets

RESULT_COLUMNS = ("label", "prediction", "correct", "raw_answer", "latency_s", "error")


@dataclass(frozen=True)
class Columns:
    """Where a use case's rows keep what the report shows."""

    inputs: tuple[str, ...]  # dataset columns the flow reads
    label: str  # dataset column with the ground truth
    prediction: str  # run output compared with the label
    raw_answer: str  # run output with the model's raw text
    correct: str  # evaluation output: per-row correctness
    confusion: bool = False  # a classification use case: draw label x prediction counts
    details: tuple[str, ...] = ()  # more evaluation outputs shown per row (e.g. similarity, relevance)

    @classmethod
    def from_config(cls, use_case: dict[str, Any]) -> Columns:
        """A use case's columns from its config in params.yaml (`data` and `report`)."""
        report = {key: tuple(value) if isinstance(value, list) else value for key, value in use_case["report"].items()}
        inputs = tuple(datasets.input_columns(use_case["data"]["inputs"]).values())
        return cls(inputs=inputs, label=use_case["data"]["label"], **report)


def flatten_rows(rows: list[dict[str, Any]], columns: Columns) -> list[dict[str, Any]]:
    """One record per row with the columns of the CSV report: id, the flow's inputs, then the results."""
    records = []
    warned = any(row.get("warnings") or row.get("eval_warnings") for row in rows)  # the column only when needed
    for row in rows:
        outputs = row.get("outputs") or {}
        evaluation = row.get("eval") or {}
        records.append(
            {
                "row_id": row["row_id"],
                **({"repeat": row["repeat"]} if "repeat" in row else {}),
                **{field: row[field] for field in columns.inputs},
                "label": row[columns.label],
                "prediction": outputs.get(columns.prediction, ""),
                "correct": evaluation.get(columns.correct),
                **{name: evaluation.get(name) for name in columns.details},
                "raw_answer": outputs.get(columns.raw_answer, ""),
                "latency_s": row.get("latency_s"),
                "error": row.get("run_error") or row.get("eval_error") or "",
                **({"warnings": " | ".join([*(row.get("warnings") or []), *(row.get("eval_warnings") or [])])}
                   if warned else {}),
            }
        )  # fmt: skip
    return records


# Keys of an evaluation's metrics.json that the toolkit writes; every other number is one the evaluation flow logged.
TOOLKIT_METRICS = frozenset(
    {"rows", "run_errors", "eval_errors", "repeats", "headline", "variant", "baseline", "variants", "cache",
     "llm_requests", "tokens", "cost", "aggregation_error", "judge_rejected"}
)  # fmt: skip


def logged_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Every number the evaluation flow logged (its aggregation's metrics), nested ones by dotted name."""
    found: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[prefix] = value

    for key, value in metrics.items():
        if key not in TOOLKIT_METRICS:
            walk(str(key), value)
    return found


@dataclass(frozen=True)
class VariantReport:
    """One variant's part of a report: its rows (flattened), its evaluation metrics, its run summary and the run's
    operational figures (LLM cache counts, wall time: run/operations.json; empty when not at hand)."""

    name: str
    records: list[dict[str, Any]]
    metrics: dict[str, Any]
    run: dict[str, Any]
    operations: dict[str, Any] = field(default_factory=dict)

    @property
    def headline(self) -> dict[str, dict[str, Any]]:
        return self.metrics.get("headline") or {}


FIXED, BROKEN, CHANGED, SAME, ERROR = "fixed", "broken", "changed", "same", "error"


def flip(baseline: dict[str, Any], candidate: dict[str, Any]) -> str:
    """How a row moved from the baseline to the candidate: fixed, broken, changed (another answer, same grade),
    same, or error (either variant failed on it)."""
    if baseline["error"] or candidate["error"]:
        return ERROR
    if bool(baseline["correct"]) != bool(candidate["correct"]):
        return FIXED if candidate["correct"] else BROKEN
    return CHANGED if baseline["prediction"] != candidate["prediction"] else SAME


def side_by_side(variants: list[VariantReport], inputs: tuple[str, ...]) -> list[dict[str, Any]]:
    """One record per row (per row repeat, with repeats): id, inputs, label, then each variant's results
    (`<variant>.<column>`), and the flip from the first variant (the baseline) to the last, when there are two or
    more (repeat r of the baseline against repeat r of the candidate)."""

    def key(record: dict[str, Any]) -> tuple[str, int]:
        return record["row_id"], record.get("repeat", 0)

    by_key = [{key(record): record for record in variant.records} for variant in variants]
    shared = {"row_id", "repeat", "label", *inputs}
    merged = []
    for record in variants[0].records:
        row = {"row_id": record["row_id"], **({"repeat": record["repeat"]} if "repeat" in record else {}),
               **{name: record[name] for name in inputs}, "label": record["label"]}  # fmt: skip
        for variant, rows in zip(variants, by_key, strict=True):
            own = rows.get(key(record), {})
            row |= {f"{variant.name}.{column}": value for column, value in own.items() if column not in shared}
        if len(variants) > 1 and key(record) in by_key[-1]:
            row["flip"] = flip(record, by_key[-1][key(record)])
        merged.append(row)
    return merged
