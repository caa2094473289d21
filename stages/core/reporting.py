"""Report building: pure functions from evaluated rows + metrics to CSV text, charts (inline SVG) and HTML.

The HTML is a single self-contained file (no CDN, no external fonts or scripts), so it opens offline.
"""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PALETTE = {"precision": "#4C72B0", "recall": "#DD8452", "ok": "#55A868", "bad": "#C44E52", "grid": "#E5E5E5"}
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
    scores: tuple[str, ...] = ()  # headline metrics that are not rates (e.g. a judge's mean 1-5): shown as numbers


def flatten_rows(rows: list[dict[str, Any]], columns: Columns) -> list[dict[str, Any]]:
    """One record per row with the columns of the CSV report: id, the flow's inputs, then the results."""
    records = []
    for row in rows:
        outputs = row.get("outputs") or {}
        evaluation = row.get("eval") or {}
        records.append(
            {
                "row_id": row["row_id"],
                **{field: row[field] for field in columns.inputs},
                "label": row[columns.label],
                "prediction": outputs.get(columns.prediction, ""),
                "correct": evaluation.get(columns.correct),
                **{name: evaluation.get(name) for name in columns.details},
                "raw_answer": outputs.get(columns.raw_answer, ""),
                "latency_s": row.get("latency_s"),
                "error": row.get("run_error") or row.get("eval_error") or "",
            }
        )
    return records


def to_csv(records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]) if records else ["row_id"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


COUNT_KEYS = ("rows", "run_errors", "eval_errors")


def is_count(key: str) -> bool:
    """Row counts: rows, run and evaluation errors, and any other `*_errors` (e.g. judge_errors)."""
    return key in COUNT_KEYS or key.endswith("_errors")


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in metrics.items()
        if not is_count(key) and isinstance(value, int | float) and not isinstance(value, bool)
    }


def rates(metrics: dict[str, Any], scores: tuple[str, ...] = ()) -> dict[str, float]:
    """The headline rates in [0, 1]: top-level numbers that are neither counts nor `scores` (accuracy, f1, ...)."""
    return {key: value for key, value in _numbers(metrics).items() if key not in scores}


def score_values(metrics: dict[str, Any], scores: tuple[str, ...]) -> dict[str, float]:
    """The headline metrics named in `scores` that the metrics hold, in that order."""
    numbers = _numbers(metrics)
    return {key: numbers[key] for key in scores if key in numbers}


def judge_scores(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """LLM-as-judge results, `<judge>: {mean, scored, errors}` (mean on the judge's 1-5 scale): not rates."""
    return {
        key: value for key, value in metrics.items() if isinstance(value, dict) and {"scored", "errors"} <= value.keys()
    }


def headline_points(metrics: dict[str, Any], scores: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The headline numbers as `dvc plots` data: rates in [0, 1], then `scores` and judges' means (their own axis)."""
    points = [{"metric": key, "value": value, "kind": "rate"} for key, value in rates(metrics, scores).items()]
    points += [{"metric": key, "value": value, "kind": "score"} for key, value in score_values(metrics, scores).items()]
    points += [
        {"metric": key, "value": score["mean"], "kind": "judge (1-5)"}
        for key, score in judge_scores(metrics).items()
        if score.get("mean") is not None
    ]
    return points


def latency_points(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Row latencies, fastest first, against the share of rows answered that fast: a latency curve per revision."""
    latencies = sorted(record["latency_s"] for record in records if record.get("latency_s") is not None)
    return [
        {"rows_pct": round(100 * (rank + 1) / len(latencies), 2), "latency_s": round(latency, 4)}
        for rank, latency in enumerate(latencies)
    ]


def judge_summary(score: dict[str, Any]) -> tuple[str, str]:
    """A judge's headline value ('3.42 / 5', or 'n/a' when it scored nothing) and its counts."""
    mean = score.get("mean")
    value = f"{mean:.2f} / 5" if mean is not None else "n/a"
    return value, f"{score['scored']} scored, {score['errors']} unparseable"


def _subplots(width: float, height: float) -> tuple[Figure, Any]:
    """A figure and its axes; matplotlib is imported here so `llmops` commands start fast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _svg(figure: Figure, dpi: int) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", dpi=dpi, bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog so it can be inlined


def rates_chart(values: dict[str, float], dpi: int) -> str:
    """Horizontal bars of the headline metrics, labelled with their values."""
    names = list(values)[::-1]
    figure, axis = _subplots(7, 0.42 * len(names) + 1.0)
    bars = axis.barh(names, [values[n] for n in names], color=PALETTE["precision"], height=0.6)
    axis.bar_label(bars, labels=[f"{values[n]:.1%}" for n in names], padding=3, fontsize=8)
    axis.set_xlim(0, 1.08)
    axis.grid(axis="x", color=PALETTE["grid"])
    axis.set_axisbelow(True)
    axis.spines[["top", "right"]].set_visible(False)
    axis.set_title("Metrics", loc="left", fontsize=11)
    return _svg(figure, dpi)


def class_chart(metrics: dict[str, Any], dpi: int) -> str:
    """Horizontal grouped bars of per-class precision and recall, worst recall on top."""
    recall = metrics.get("recall", {})
    precision = metrics.get("precision", {})
    classes = sorted(recall, key=lambda name: (recall[name], name), reverse=True)
    figure, axis = _subplots(7, 0.45 * len(classes) + 1.2)
    positions = range(len(classes))
    height = 0.38
    axis.barh([p + height / 2 for p in positions], [precision.get(c, 0) for c in classes], height,
              label="precision", color=PALETTE["precision"])  # fmt: skip
    axis.barh([p - height / 2 for p in positions], [recall[c] for c in classes], height,
              label="recall", color=PALETTE["recall"])  # fmt: skip
    axis.set_yticks(list(positions), classes)
    axis.set_xlim(0, 1)
    axis.axvline(metrics.get("accuracy", 0), color="#333", linestyle="--", linewidth=1)
    axis.text(metrics.get("accuracy", 0), len(classes) - 0.4, " accuracy", fontsize=8, va="bottom")
    axis.grid(axis="x", color=PALETTE["grid"])
    axis.set_axisbelow(True)
    axis.spines[["top", "right"]].set_visible(False)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, frameon=False, fontsize=8)
    axis.set_title("Precision and recall per class", loc="left", fontsize=11)
    return _svg(figure, dpi)


def confusion(records: list[dict[str, Any]]) -> tuple[list[str], list[str], Counter[tuple[str, str]]]:
    labels = sorted({r["label"] for r in records})
    predicted = labels + sorted({r["prediction"] for r in records if r["prediction"] not in labels and r["prediction"]})
    return labels, predicted, Counter((r["label"], r["prediction"]) for r in records if r["prediction"])


def confusion_chart(records: list[dict[str, Any]], dpi: int) -> str:
    """Heatmap of label (rows) x prediction (columns), counts written in the cells."""
    labels, predicted, counts = confusion(records)
    grid = [[counts[(label, guess)] for guess in predicted] for label in labels]
    figure, axis = _subplots(0.55 * len(predicted) + 2, 0.45 * len(labels) + 1.5)
    axis.imshow(grid, cmap="Blues", aspect="auto")
    axis.set_xticks(range(len(predicted)), predicted, rotation=40, ha="right", fontsize=8)
    axis.set_yticks(range(len(labels)), labels, fontsize=8)
    axis.set_xlabel("prediction")
    axis.set_ylabel("label")
    peak = max((max(row) for row in grid), default=0)
    for y, row in enumerate(grid):
        for x, value in enumerate(row):
            if value:
                colour = "white" if value > peak / 2 else "#222"
                axis.text(x, y, str(value), ha="center", va="center", fontsize=8, color=colour)
    axis.set_title("Confusion matrix", loc="left", fontsize=11)
    return _svg(figure, dpi)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
     color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} .facts{color:#555;margin-bottom:1.2rem}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin-bottom:1.5rem}
.card{border:1px solid #ddd;border-radius:8px;padding:.7rem 1rem;min-width:140px}
.k{font-size:.8rem;color:#666;text-transform:uppercase;letter-spacing:.03em} .v{font-size:1.6rem;font-weight:600}
.n{font-size:.8rem;color:#777} .charts{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start}
.charts svg{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:.8rem;width:100%}
th,td{border-bottom:1px solid #eee;padding:.3rem .4rem;text-align:left;vertical-align:top}
tr.bad td:first-child{border-left:3px solid #C44E52}
tr.ok td:first-child{border-left:3px solid #55A868}
"""


def _card(title: str, value: str, note: str = "") -> str:
    return (
        f'<div class="card"><div class="k">{html.escape(title)}</div><div class="v">{html.escape(value)}</div>'
        f'<div class="n">{html.escape(note)}</div></div>'
    )


def _cell(value: Any, limit: int = 90) -> str:
    text = "" if value is None else str(value)
    return html.escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _table(records: list[dict[str, Any]], max_rows: int) -> str:
    ordered = sorted(records, key=lambda r: (r["correct"] is True, r["row_id"]))[:max_rows]
    columns = list(records[0]) if records else []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for record in ordered:
        status = "ok" if record["correct"] else "bad"
        cells = "".join(f"<td>{_cell(record[c])}</td>" for c in columns)
        body.append(f'<tr class="{status}">{cells}</tr>')
    note = f"<p class='n'>Showing {len(ordered)} of {len(records)} rows, mistakes first.</p>"
    return f"{note}<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(
    title: str, context: dict[str, str], metrics: dict[str, Any], run: dict[str, Any],
    records: list[dict[str, Any]], dpi: int, max_rows: int, confusion: bool = False, scores: tuple[str, ...] = (),
) -> str:  # fmt: skip
    """The whole report page: headline numbers, charts, and the rows (mistakes first)."""
    headline = rates(metrics, scores)
    latency = run.get("latency_s", {})
    cards = [_card(name.replace("_", " "), f"{value:.1%}") for name, value in headline.items()]
    cards += [
        _card(name.replace("_", " "), f"{value:.2f}", "mean") for name, value in score_values(metrics, scores).items()
    ]

    cards += [_card(name, *judge_summary(score)) for name, score in judge_scores(metrics).items()]
    cards.append(_card("rows", str(metrics.get("rows", 0)), "evaluated"))
    other_counts = {key: value for key, value in metrics.items() if is_count(key) and key not in COUNT_KEYS}
    cards += [_card(key.replace("_", " "), str(value)) for key, value in other_counts.items()]
    if run.get("invalid_answers"):
        cards.append(_card("invalid answers", str(run["invalid_answers"]), "kept raw, marked invalid"))
    cards += [
        _card("errors", str(run.get("errors", 0) + metrics.get("eval_errors", 0)), "run + evaluation"),
        _card("latency p50", f"{latency.get('p50', 0):.2f} s", f"p95 {latency.get('p95', 0):.2f} s"),
    ]
    facts = " · ".join(f"{html.escape(k)}: <b>{html.escape(v)}</b>" for k, v in context.items())
    charts = [rates_chart(headline, dpi)] if headline else []
    if isinstance(metrics.get("recall"), dict):
        charts.append(class_chart(metrics, dpi))
    if confusion and records:
        charts.append(confusion_chart(records, dpi))
    charts = "".join(charts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1><div class="facts">{facts}</div>
<div class="cards">{"".join(cards)}</div>
<div class="charts">{charts}</div>
<h2>Rows</h2>{_table(records, max_rows)}
</body></html>
"""
