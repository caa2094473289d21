"""The evaluation report: pure functions from evaluated rows and metrics to CSV text and the HTML page.

A report covers the variants a run executed (the selected one and its baseline): headline metrics with 95%
confidence intervals, the comparison verdicts, latency, and the rows side by side with the rows that flip
between variants highlighted and filterable. The page is one self-contained file (no CDN, no external fonts
or scripts; the filter is a few lines of inline JavaScript), so it opens offline. This module builds what the
page shows; `templates/report.html.jinja2` renders it (`stages.results.pages`, autoescaped); the charts and the
`dvc plots` data are `stages.results.charts`.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stages.metrics import headline, operations
from stages.results import charts, pages, plan
from stages.results.charts import PowerCurve
from stages.results.formatting import (
    adjusted,
    format_usd,
    format_value,
    is_rate,
    judges,
    rejected_note,
    total_cost,
)
from stages.results.pages import PAGE_CSS, Card, Table
from stages.results.rows import (
    BROKEN,
    CHANGED,
    ERROR,
    FIXED,
    SAME,
    Columns,
    VariantReport,
    flatten_rows,
    logged_metrics,
    side_by_side,
)

# PAGE_CSS: re-exported for the pages built piecewise
__all__ = ["PAGE_CSS", "Report", "build", "power_curve", "render_html", "to_csv", "variant_reports", "warnings"]


def to_csv(records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]) if records else ["row_id"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def variant_reports(
    metrics: dict[str, Any], run: dict[str, Any], run_operations: dict[str, Any],
    eval_rows: Callable[[str], list[dict[str, Any]]], columns: Columns,
) -> list[VariantReport]:  # fmt: skip
    """What the report covers, baseline first, the selected variant last (one entry if the same): each variant's
    evaluated rows (`eval_rows(variant)`), metrics, run summary and operations."""
    selected, baseline = metrics["variant"], metrics["baseline"]

    def part(name: str) -> VariantReport:
        own_metrics = metrics if name == selected else metrics["variants"][name]
        own_run = run if name == selected else run["variants"][name]
        records = flatten_rows(eval_rows(name), columns)
        return VariantReport(name, records, own_metrics, own_run, operations.of_variant(run_operations, name))

    return [part(name) for name in ([baseline] if selected == baseline else [baseline, selected])]


def _cell(value: Any, limit: int = 90) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _full(value: Any, cell: str) -> str:
    """The whole text of a value `_cell` clipped (shown on hover: a row's error ends with the endpoint's message), else
    ""."""
    text = "" if value is None else str(value)
    return text if text != cell else ""


def _headline_cards(variant: VariantReport, baseline: str) -> list[Card]:
    cards = []
    judged = judges(variant.metrics)
    logged = logged_metrics(variant.metrics)
    for name, result in variant.headline.items():
        rate = is_rate([result])
        value = format_value(result.get("value"), rate) + (" / 5" if name in judged and not rate else "")
        note = f"95% CI {format_value(result.get('ci_low'), rate)} to {format_value(result.get('ci_high'), rate)}"
        if spread := result.get("repeats"):
            note += f" · ±{format_value(spread['std'], rate)} over {spread['k']} repeats, {spread['stable']:.0%} stable"
        note_class = "n"
        if result.get("verdict"):
            delta = f"{result['delta']:+.1%}" if rate else f"{result['delta']:+.2f}"
            note += f" · vs {baseline}: {delta}, p={result['p_value']:.2g}{adjusted(result)}, {result['verdict']}"
            note_class = {"better": "better", "worse": "worse"}.get(result["verdict"], "n")
        title = name.replace("_", " ") + (" (headline)" if name in logged else "")  # the flow logged its own
        cards.append(Card(title, value, note, note_class))
    return cards


def _logged_table(variants: list[VariantReport]) -> Table | None:
    """Every metric the evaluation flow logged, per variant (a headline metric of the same name is the toolkit's
    own, from the per-row values, shown in the cards above)."""
    logged = [logged_metrics(v.metrics) for v in variants]
    names = list(dict.fromkeys(name for values in logged for name in values))
    if not names:
        return None
    headline = set(variants[-1].headline)
    rows = [[name + (" (logged by the flow)" if name in headline else ""), *(_number(v.get(name)) for v in logged)]
            for name in names]  # fmt: skip
    return Table(["metric", *(v.name for v in variants)], rows)


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:g}" if isinstance(value, int) else f"{value:.4g}"


def warnings(run: dict[str, Any], metrics: dict[str, Any] | None = None) -> list[str]:
    """The warnings a run's summary and the evaluation's metrics call for: most rows with one identical output (a
    placeholder answer), rows with warnings, an aggregation that failed. Empty when there is none."""
    lines = []
    if failed := (metrics or {}).get("aggregation_error"):
        lines.append(
            f"The evaluation flow's aggregation failed ({failed}): the metrics it logs are missing; the headline "
            "metrics below are computed from the evaluated rows."
        )
    if rejected := (metrics or {}).get("judge_rejected"):
        rows = (metrics or {}).get("rows", 0) + (metrics or {}).get("eval_errors", 0)
        lines.append(f"{rejected_note(rejected, rows)}: their errors are in the rows below.")
    if same := run.get("identical_outputs"):
        lines.append(
            f"{same['rows']} of {same['of']} answered rows have the same output {same['output']}: a placeholder "
            "answer of a node that swallowed an error? Check the rows' warnings and errors."
        )
    if warned := run.get("rows_with_warnings"):
        lines.append(f"{warned} rows printed or logged warnings while running (column warnings below).")
    return lines


def _count_cards(variant: VariantReport) -> list[Card]:
    metrics, run, operations = variant.metrics, variant.run, variant.operations
    k = metrics.get("repeats")
    evaluated = f"evaluated: {run.get('rows', '?')} rows x {k} repeats" if k else "evaluated"
    cards = [Card("rows", str(metrics.get("rows", 0)), evaluated)]
    judged = judges(metrics)
    flat = {key: value for key, value in metrics.items() if key.endswith("_errors")}
    counts = {key: value for key, value in flat.items() if key not in ("run_errors", "eval_errors")}
    cards += [Card(key.replace("_", " "), str(value)) for key, value in counts.items()]
    cards += [
        Card(f"{key} errors", str(value["errors"]), f"{value['scored']} scored, {value['errors']} unparseable")
        for key, value in judged.items()
    ]
    if run.get("invalid_answers"):
        cards.append(Card("invalid answers", str(run["invalid_answers"]), "kept raw, marked invalid"))
    latency = run.get("latency_s", {})
    cards += [
        Card("errors", str(run.get("errors", 0) + metrics.get("eval_errors", 0)), "run + evaluation"),
        Card("latency p50", f"{latency.get('p50', 0):.2f} s", f"p95 {latency.get('p95', 0):.2f} s"),
    ]
    for node, variant_id in run.get("node_variants", {}).items():  # the DAG's prompt flow node variants that ran
        cards.append(Card(f"node {node}", variant_id, "node variant"))
    if cache := operations.get("cache"):  # the run's LLM requests (the row-level LLM cache)
        tokens = run.get("tokens", {})
        detail = f"{cache['hits']} from the cache · {tokens.get('prompt', 0) + tokens.get('completion', 0)} tokens"
        cards.append(Card("LLM requests", str(cache["hits"] + cache["misses"]), detail))
    if "cost" in run or "cost" in metrics:
        usd = total_cost(run, metrics)
        note = "flow + judges, conf/prices.yaml" if usd is not None else "a model has no price in conf/prices.yaml"
        cards.append(Card("cost", format_usd(usd), note))
    return cards


def _wall(operations: dict[str, Any]) -> str:
    return f"{operations['wall_s']:.1f} s" if "wall_s" in operations else "–"


def _tokens(block: dict[str, Any]) -> str:
    tokens = block.get("tokens")
    return f"{tokens.get('prompt', 0):,} / {tokens.get('completion', 0):,}" if tokens else "–"


def _usage_table(variants: list[VariantReport]) -> Table:
    """Per variant: rows, errors, latency p50/p95, wall time, tokens (flow and judges) and cost."""
    head = ["variant", "rows", "run errors", "invalid answers", "latency p50", "latency p95", "wall time",
            "tokens in / out", "judge tokens in / out", "cost"]  # fmt: skip
    rows = []
    for v in variants:
        latency = v.run.get("latency_s", {})
        unpriced = total_cost(v.run, v.metrics) is None and (v.run.get("cost") or v.metrics.get("cost"))
        cost = format_usd(total_cost(v.run, v.metrics)) + (f" ({UNPRICED})" if unpriced else "")
        rows.append([v.name, v.run.get("rows", 0), v.run.get("errors", 0), v.run.get("invalid_answers", 0),
                     f"{latency.get('p50', 0):.2f} s", f"{latency.get('p95', 0):.2f} s", _wall(v.operations),
                     _tokens(v.run), _tokens(v.metrics), cost])  # fmt: skip
    return Table(head, rows)


def _repeats_table(variants: list[VariantReport]) -> Table | None:
    """With repeats: each headline metric's spread over the repeats per variant, and how stable the rows are."""
    rows = []
    for v in variants:
        for name, result in v.headline.items():
            if not (spread := result.get("repeats")):
                continue
            rate = is_rate([result])
            rows.append([v.name, name, str(spread["k"]), format_value(spread["mean"], rate),
                         format_value(spread["std"], rate), format_value(spread["min"], rate),
                         format_value(spread["max"], rate), f"{spread['stable']:.1%}"])  # fmt: skip
    head = ["variant", "metric", "repeats", "mean", "std", "min", "max", "rows stable"]
    return Table(head, rows) if rows else None


UNPRICED = "a model has no price in conf/prices.yaml"
_FLIP_ORDER = {BROKEN: 0, FIXED: 1, ERROR: 2, CHANGED: 3, SAME: 4}
_SHOWN = ("prediction", "correct", "raw_answer", "error", "warnings")


def _columns(rows: list[dict[str, Any]], names: list[str]) -> list[str]:
    """The rows table's columns: the inputs, each variant's answer columns, then the other per-variant columns."""
    base = [key for key in rows[0] if "." not in key and key != "flip"] if rows else []
    extra = [key for key in (rows[0] if rows else {}) if "." in key and key.split(".", 1)[1] not in
             (*_SHOWN, "latency_s")]  # fmt: skip
    present = {key for row in rows for key in row}
    return base + [f"{name}.{key}" for name in names for key in _SHOWN if f"{name}.{key}" in present] + extra


def _filters(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The row filter's buttons: a label and the flips it shows ("" shows every row)."""
    counts = Counter(row.get("flip") for row in rows)
    return [
        ("all", ""),
        (f"flipped ({counts[FIXED] + counts[BROKEN]})", f"{FIXED} {BROKEN}"),
        (f"fixed ({counts[FIXED]})", FIXED),
        (f"broken ({counts[BROKEN]})", BROKEN),
        (f"other answer, same grade ({counts[CHANGED]})", CHANGED),
        (f"errors ({counts[ERROR]})", ERROR),
    ]


def _rows_table(rows: list[dict[str, Any]], variants: list[VariantReport], max_rows: int) -> dict[str, Any]:
    """The rows side by side, the rows the selected variant broke first, then the ones it fixed (or mistakes first
    with one variant); with two variants, a filter by flip."""
    names = [variant.name for variant in variants]
    columns = _columns(rows, names)
    compared = len(variants) > 1

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        last = row.get(f"{names[-1]}.correct")
        return (_FLIP_ORDER.get(row.get("flip", SAME), 5), last is True, row["row_id"])

    ordered = sorted(rows, key=order)[:max_rows]
    shown = []
    for row in ordered:
        flip = row.get("flip", "")
        status = flip if compared else ("ok" if row.get(f"{names[-1]}.correct") else "bad")
        cells = [_cell(row.get(c)) for c in columns]
        titles = [_full(row.get(c), cell) for c, cell in zip(columns, cells, strict=True)]  # clipped: the whole text
        shown.append({"status": status, "flip": flip, "cells": cells, "titles": titles})
    if compared:
        note = (f"Showing {len(ordered)} of {len(rows)} rows: rows {names[-1]} broke first, then rows it fixed "
                f"(compared with {names[0]}).")  # fmt: skip
    else:
        note = f"Showing {len(ordered)} of {len(rows)} rows, mistakes first."
    return {"columns": columns, "rows": shown, "note": note, "filters": _filters(rows) if compared else []}


def render_html(
    title: str, context: dict[str, str], variants: list[VariantReport], rows: list[dict[str, Any]], dpi: int,
    max_rows: int, confusion: bool = False, power: PowerCurve | None = None, appendix: str = "",
) -> str:  # fmt: skip
    """The whole report page. `variants` is baseline first, the selected variant last (one entry if the same);
    `appendix` is HTML (already escaped) shown at the end, e.g. the rows' trace waterfalls."""
    selected, baseline = variants[-1], variants[0]
    drawn = [charts.headline_chart(variants, dpi)] if selected.headline else []
    if isinstance(selected.metrics.get("recall"), dict):
        drawn.append(charts.class_chart(selected.metrics, dpi))
    if confusion and selected.records:
        drawn.append(charts.confusion_chart(selected.records, dpi))
    if power is not None:
        drawn.append(charts.power_chart(power, dpi))
    return pages.render(
        "report.html.jinja2", title=title, facts=context, warnings=warnings(selected.run, selected.metrics),
        cards=_headline_cards(selected, baseline.name) + _count_cards(selected), charts=pages.trusted(drawn),
        logged=_logged_table(variants), repeats=_repeats_table(variants), usage=_usage_table(variants),
        rows=_rows_table(rows, variants, max_rows), appendix=pages.trusted([appendix])[0],
    )  # fmt: skip


def power_curve(
    use_case: dict[str, Any], eval_rows: Callable[[str], list[dict[str, Any]]], selected: str, baseline: str
) -> PowerCurve | None:
    """The first headline metric's power curve (`plan.power_curve`), the selected variant's evaluated rows paired
    with the baseline variant's; None without headline metrics or values."""
    specs = headline.parse_specs(use_case.get("metrics"), "use_cases.<uc>.metrics")
    if not specs:
        return None
    other = None if selected == baseline else eval_rows(baseline)
    return plan.power_curve(specs[0], eval_rows(selected), other, baseline)


@dataclass(frozen=True)
class Report:
    """A use case's report: the CSV of every row, the `dvc plots` data and the HTML page."""

    csv: str
    plot_metrics: list[dict[str, Any]]
    plot_latency: list[dict[str, Any]]
    html: str


def build(
    name: str, params: dict[str, Any], metrics: dict[str, Any], run: dict[str, Any], run_operations: dict[str, Any],
    eval_rows: Callable[[str], list[dict[str, Any]]], spans: Sequence[Any] | None = None,
) -> Report:  # fmt: skip
    """The report of use case `name` from its metrics, run summary and operations, and each variant's evaluated
    rows (`eval_rows(variant)`); `spans`, the run's trace spans, add each row's waterfall to the page."""
    from stages.observability import waterfall

    use_case, settings = params["use_cases"][name], params["report"]
    columns = Columns.from_config(use_case)
    selected, baseline = metrics["variant"], metrics["baseline"]
    variants = variant_reports(metrics, run, run_operations, eval_rows, columns)
    rows = side_by_side(variants, columns.inputs)
    curve = power_curve(use_case, eval_rows, selected, baseline)
    shown = selected if selected == baseline else f"{selected} (baseline {baseline})"
    context = {"variant": shown, "llm": f"{params['llm']['name']} ({params['llm']['model']})"}
    appendix = "" if spans is None else waterfall.report_section(spans, selected, settings["max_rows_in_html"])
    page = render_html(f"{name}: evaluation report", context, variants, rows, settings["chart_dpi"],
                       settings["max_rows_in_html"], columns.confusion, curve, appendix)  # fmt: skip
    return Report(to_csv(rows), charts.headline_points(variants), charts.latency_points(variants), page)
