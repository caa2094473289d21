"""Report building: pure functions from evaluated rows + metrics to CSV text, charts (inline SVG) and HTML.

A report covers the variants a run executed (the selected one and its baseline): headline metrics with 95%
confidence intervals, the comparison verdicts, latency, and the rows side by side with the rows that flip
between variants highlighted and filterable. The HTML is one self-contained file (no CDN, no external fonts
or scripts; the filter is a few lines of inline JavaScript), so it opens offline. The same headline metrics and
latencies are also written as `dvc plots` data (`headline_points`, `latency_points`), to compare revisions.
"""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stages.results.formatting import (
    adjusted,
    format_usd,
    format_value,
    is_rate,
    judges,
    total_cost,
)
from stages.results.rows import (
    BROKEN,
    CHANGED,
    ERROR,
    FIXED,
    SAME,
    VariantReport,
    logged_metrics,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PALETTE = {"precision": "#4C72B0", "recall": "#DD8452", "ok": "#55A868", "bad": "#C44E52", "grid": "#E5E5E5"}
VARIANT_COLOURS = ("#8C8C8C", "#4C72B0", "#DD8452", "#55A868", "#8172B3", "#937860")  # baseline grey first


def to_csv(records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]) if records else ["row_id"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _subplots(width: float, height: float, rows: int | None = None) -> tuple[Figure, Any]:
    """A figure and its axes (a list of `rows` axes, stacked, when `rows` is given); matplotlib is imported here
    so `llmops` commands start fast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(rows or 1, 1, figsize=(width, height), squeeze=False)
    return figure, (list(axes[:, 0]) if rows is not None else axes[0, 0])


def _svg(figure: Figure, dpi: int) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", dpi=dpi, bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog so it can be inlined


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


def headline_chart(variants: list[VariantReport], dpi: int) -> str:
    """One panel per headline metric: a bar per variant with its 95% CI as a whisker, the value written beside it."""
    names = list(variants[-1].headline)
    figure, axes = _subplots(7.5, 0.55 * len(variants) * len(names) + 0.6 * len(names) + 0.4, rows=len(names))
    for axis, name in zip(axes, names, strict=True):
        results = [variant.headline.get(name, {}) for variant in variants]
        rate = is_rate(results)
        labels = [variant.name for variant in variants][::-1]
        values = [r.get("value") or 0 for r in results][::-1]
        low = [(r.get("value") or 0) - (r.get("ci_low") or 0) for r in results][::-1]
        high = [(r.get("ci_high") or 0) - (r.get("value") or 0) for r in results][::-1]
        colours = [VARIANT_COLOURS[i % len(VARIANT_COLOURS)] for i in range(len(variants))][::-1]
        axis.barh(labels, values, color=colours, height=0.6, xerr=[low, high],
                  error_kw={"ecolor": "#333", "capsize": 3, "elinewidth": 1})  # fmt: skip
        for y, (value, result) in enumerate(zip(values, results[::-1], strict=True)):
            note = format_value(result.get("value"), rate)
            if result.get("verdict"):
                note += f"  {result['delta']:+.3f}, p={result['p_value']:.2g}{adjusted(result)}: {result['verdict']}"
            axis.text((result.get("ci_high") or value) + (0.01 if rate else 0.04), y, note, va="center", fontsize=8)
        axis.set_xlim(0, 1.45) if rate else axis.set_xlim(1 if min(values, default=0) >= 1 else 0, 7.2)
        if rate:
            axis.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
        axis.set_title(name.replace("_", " ") + ("" if rate else " (1-5)"), loc="left", fontsize=10)
        axis.grid(axis="x", color=PALETTE["grid"])
        axis.set_axisbelow(True)
        axis.spines[["top", "right"]].set_visible(False)
    figure.suptitle("Headline metrics with 95% confidence intervals", x=0.01, ha="left", fontsize=11)
    figure.tight_layout()
    return _svg(figure, dpi)


@dataclass(frozen=True)
class PowerCurve:
    """The headline metric's probability of detecting each drop (`stages.metrics.power`), for the report."""

    metric: str
    rows: int
    drops: list[float]
    detection: list[float]
    mde: float | None
    rate: bool
    note: str  # where the noise comes from


def power_chart(curve: PowerCurve, dpi: int) -> str:
    """Drop (x) against the probability that the paired test detects it (y), with 80% and the MDE marked."""
    figure, axis = _subplots(7.5, 3.0)
    scale = 100 if curve.rate else 1
    axis.plot([d * scale for d in curve.drops], curve.detection, color=VARIANT_COLOURS[1], linewidth=2)
    axis.axhline(0.8, color="#888", linestyle="--", linewidth=1)
    if curve.mde is not None:
        axis.axvline(curve.mde * scale, color=PALETTE["bad"], linestyle=":", linewidth=1)
        shown = f"{curve.mde * scale:.1f} pts" if curve.rate else f"{curve.mde:.2f}"
        axis.text(curve.mde * scale, 0.05, f" MDE {shown}", color=PALETTE["bad"], fontsize=8)
    axis.set_ylim(0, 1.02)
    axis.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0], ["0%", "20%", "40%", "60%", "80%", "100%"])
    axis.set_xlabel("true drop" + (" (points)" if curve.rate else ""))
    axis.set_ylabel("probability of detection")
    axis.grid(color=PALETTE["grid"])
    axis.spines[["top", "right"]].set_visible(False)
    axis.set_title(f"Power: {curve.metric.replace('_', ' ')} on {curve.rows} rows ({curve.note})", loc="left",
                   fontsize=10)  # fmt: skip
    figure.tight_layout()
    return _svg(figure, dpi)


def headline_points(variants: list[VariantReport]) -> list[dict[str, Any]]:
    """The headline metrics as `dvc plots` data: one point per metric and variant (baseline first) with its 95% CI;
    `kind` tells rates in [0, 1] from scores on their own scale (a judge's 1-5). A metric without a value is left out.
    """
    points = []
    for name in variants[-1].headline:
        results = [variant.headline.get(name, {}) for variant in variants]
        kind = "rate" if is_rate(results) else "score"
        points += [
            {"metric": name, "variant": variant.name, "value": result["value"], "ci_low": result.get("ci_low"),
             "ci_high": result.get("ci_high"), "kind": kind}
            for variant, result in zip(variants, results, strict=True)
            if result.get("value") is not None
        ]  # fmt: skip
    return points


def latency_points(variants: list[VariantReport]) -> list[dict[str, Any]]:
    """Each variant's row latencies, fastest first, against the share of its rows answered that fast: one latency
    curve per variant (and per revision, in `dvc plots diff`). Rows without a latency are left out."""
    points = []
    for variant in variants:
        latencies = sorted(r["latency_s"] for r in variant.records if r.get("latency_s") is not None)
        points += [
            {"variant": variant.name, "rows_pct": round(100 * (rank + 1) / len(latencies), 2),
             "latency_s": round(latency, 4)}
            for rank, latency in enumerate(latencies)
        ]  # fmt: skip
    return points


PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
     color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:1.8rem}
.facts{color:#555;margin-bottom:1.2rem}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin-bottom:1.5rem}
.card{border:1px solid #ddd;border-radius:8px;padding:.7rem 1rem;min-width:150px;max-width:260px}
.k{font-size:.8rem;color:#666;text-transform:uppercase;letter-spacing:.03em} .v{font-size:1.6rem;font-weight:600}
.n{font-size:.8rem;color:#777} .better{color:#2E7D32;font-weight:600} .worse{color:#C62828;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start} .charts svg{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:.8rem;width:100%}
th,td{border-bottom:1px solid #eee;padding:.3rem .4rem;text-align:left;vertical-align:top}
tr.bad td:first-child{border-left:3px solid #C44E52} tr.ok td:first-child{border-left:3px solid #55A868}
tr.fixed{background:#EAF6EC} tr.broken{background:#FBEAEA} tr.changed{background:#FFF8E1}
.warn{background:#FFF4E5;border-left:4px solid #ED6C02;padding:.5rem .8rem;margin:.4rem 0}
.filters{margin:.6rem 0} .filters button{border:1px solid #ccc;background:#fff;border-radius:14px;
  padding:.2rem .7rem;margin-right:.3rem;cursor:pointer;font-size:.8rem} .filters button.on{background:#222;color:#fff}
"""

# Shows only the rows whose data-flip is in the pressed button's data-show list ("" shows every row).
_FILTER_JS = """
document.querySelectorAll('.filters button').forEach(function (button) {
  button.addEventListener('click', function () {
    var show = button.dataset.show ? button.dataset.show.split(' ') : null;
    document.querySelectorAll('.filters button').forEach(function (b) { b.classList.toggle('on', b === button); });
    document.querySelectorAll('#rows tbody tr').forEach(function (row) {
      row.style.display = !show || show.indexOf(row.dataset.flip) >= 0 ? '' : 'none';
    });
  });
});
"""


def _card(title: str, value: str, note: str = "", note_class: str = "n") -> str:
    return (
        f'<div class="card"><div class="k">{html.escape(title)}</div><div class="v">{html.escape(value)}</div>'
        f'<div class="{note_class}">{html.escape(note)}</div></div>'
    )


def _cell(value: Any, limit: int = 90) -> str:
    text = "" if value is None else str(value)
    return html.escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _headline_cards(variant: VariantReport, baseline: str) -> list[str]:
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
        cards.append(_card(title, value, note, note_class))
    return cards


def _logged_table(variants: list[VariantReport]) -> str:
    """Every metric the evaluation flow logged, per variant (a headline metric of the same name is the toolkit's
    own, from the per-row values, shown in the cards above)."""
    logged = [logged_metrics(v.metrics) for v in variants]
    names = list(dict.fromkeys(name for values in logged for name in values))
    if not names:
        return ""
    headline = set(variants[-1].headline)
    head = "<tr><th>metric</th>" + "".join(f"<th>{html.escape(v.name)}</th>" for v in variants) + "</tr>"
    body = []
    for name in names:
        label = name + (" (logged by the flow)" if name in headline else "")
        cells = "".join(f"<td>{_number(values.get(name))}</td>" for values in logged)
        body.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    note = "<p class='n'>As the evaluation flow's aggregation logged them (metrics.json), without intervals.</p>"
    return f"<h2>Metrics the evaluation flow logged</h2>{note}<table>{head}{''.join(body)}</table>"


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:g}" if isinstance(value, int) else f"{value:.4g}"


def warnings_banner(run: dict[str, Any], metrics: dict[str, Any] | None = None) -> str:
    """The warnings a run's summary and the evaluation's metrics call for: most rows with one identical output (a
    placeholder answer), rows with warnings, an aggregation that failed. Empty when there is none."""
    lines = []
    if failed := (metrics or {}).get("aggregation_error"):
        lines.append(
            f"The evaluation flow's aggregation failed ({failed}): the metrics it logs are missing; the headline "
            "metrics below are computed from the evaluated rows."
        )
    if same := run.get("identical_outputs"):
        lines.append(
            f"{same['rows']} of {same['of']} answered rows have the same output {same['output']}: a placeholder "
            "answer of a node that swallowed an error? Check the rows' warnings and errors."
        )
    if warned := run.get("rows_with_warnings"):
        lines.append(f"{warned} rows printed or logged warnings while running (column warnings below).")
    return "".join(f'<p class="warn">⚠ {html.escape(line)}</p>' for line in lines)


def _count_cards(variant: VariantReport) -> list[str]:
    metrics, run, operations = variant.metrics, variant.run, variant.operations
    k = metrics.get("repeats")
    evaluated = f"evaluated: {run.get('rows', '?')} rows x {k} repeats" if k else "evaluated"
    cards = [_card("rows", str(metrics.get("rows", 0)), evaluated)]
    judged = judges(metrics)
    flat = {key: value for key, value in metrics.items() if key.endswith("_errors")}
    counts = {key: value for key, value in flat.items() if key not in ("run_errors", "eval_errors")}
    cards += [_card(key.replace("_", " "), str(value)) for key, value in counts.items()]
    cards += [
        _card(f"{key} errors", str(value["errors"]), f"{value['scored']} scored, {value['errors']} unparseable")
        for key, value in judged.items()
    ]
    if run.get("invalid_answers"):
        cards.append(_card("invalid answers", str(run["invalid_answers"]), "kept raw, marked invalid"))
    latency = run.get("latency_s", {})
    cards += [
        _card("errors", str(run.get("errors", 0) + metrics.get("eval_errors", 0)), "run + evaluation"),
        _card("latency p50", f"{latency.get('p50', 0):.2f} s", f"p95 {latency.get('p95', 0):.2f} s"),
    ]
    for node, variant_id in run.get("node_variants", {}).items():  # the DAG's prompt flow node variants that ran
        cards.append(_card(f"node {node}", variant_id, "node variant"))
    if cache := operations.get("cache"):  # the run's LLM requests (the row-level LLM cache)
        tokens = run.get("tokens", {})
        detail = f"{cache['hits']} from the cache · {tokens.get('prompt', 0) + tokens.get('completion', 0)} tokens"
        cards.append(_card("LLM requests", str(cache["hits"] + cache["misses"]), detail))
    if "cost" in run or "cost" in metrics:
        usd = total_cost(run, metrics)
        note = "flow + judges, conf/prices.yaml" if usd is not None else "a model has no price in conf/prices.yaml"
        cards.append(_card("cost", format_usd(usd), note))
    return cards


def _wall(operations: dict[str, Any]) -> str:
    return f"{operations['wall_s']:.1f} s" if "wall_s" in operations else "–"


def _tokens(block: dict[str, Any]) -> str:
    tokens = block.get("tokens")
    return f"{tokens.get('prompt', 0):,} / {tokens.get('completion', 0):,}" if tokens else "–"


def _usage_table(variants: list[VariantReport]) -> str:
    """Per variant: rows, errors, latency p50/p95, wall time, tokens (flow and judges) and cost."""
    head = (
        "<tr><th>variant</th><th>rows</th><th>run errors</th><th>invalid answers</th><th>latency p50</th>"
        "<th>latency p95</th><th>wall time</th><th>tokens in / out</th><th>judge tokens in / out</th>"
        "<th>cost</th></tr>"
    )
    body = []
    for v in variants:
        latency = v.run.get("latency_s", {})
        unpriced = total_cost(v.run, v.metrics) is None and (v.run.get("cost") or v.metrics.get("cost"))
        cost_note = " (a model has no price in conf/prices.yaml)" if unpriced else ""
        body.append(
            f"<tr><td>{html.escape(v.name)}</td><td>{v.run.get('rows', 0)}</td><td>{v.run.get('errors', 0)}</td>"
            f"<td>{v.run.get('invalid_answers', 0)}</td><td>{latency.get('p50', 0):.2f} s</td>"
            f"<td>{latency.get('p95', 0):.2f} s</td><td>{_wall(v.operations)}</td>"
            f"<td>{_tokens(v.run)}</td><td>{_tokens(v.metrics)}</td>"
            f"<td>{format_usd(total_cost(v.run, v.metrics))}{html.escape(cost_note)}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _repeats_table(variants: list[VariantReport]) -> str:
    """With repeats: each headline metric's spread over the repeats per variant, and how stable the rows are."""
    lines = []
    for v in variants:
        for name, result in v.headline.items():
            if not (spread := result.get("repeats")):
                continue
            rate = is_rate([result])
            cells = [v.name, name, str(spread["k"]), format_value(spread["mean"], rate),
                     format_value(spread["std"], rate), format_value(spread["min"], rate),
                     format_value(spread["max"], rate), f"{spread['stable']:.1%}"]  # fmt: skip
            lines.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    if not lines:
        return ""
    head = ("<tr><th>variant</th><th>metric</th><th>repeats</th><th>mean</th><th>std</th><th>min</th><th>max</th>"
            "<th>rows stable</th></tr>")  # fmt: skip
    note = ("<p class='n'>Each metric computed on every repeat alone: the mean, standard deviation, min and max of "
            "those values. Rows stable: the share of rows whose value is the same in every repeat. The headline "
            "value and its CI average each row over its repeats and resample rows.</p>")  # fmt: skip
    return f"<h2>Run-to-run variation</h2>{note}<table>{head}{''.join(lines)}</table>"


_FLIP_ORDER = {BROKEN: 0, FIXED: 1, ERROR: 2, CHANGED: 3, SAME: 4}


def _rows_table(rows: list[dict[str, Any]], variants: list[VariantReport], max_rows: int) -> str:
    names = [variant.name for variant in variants]
    shown = ("prediction", "correct", "raw_answer", "error", "warnings")
    base = [key for key in rows[0] if "." not in key and key != "flip"] if rows else []
    extra = [key for key in (rows[0] if rows else {}) if "." in key and key.split(".", 1)[1] not in
             (*shown, "latency_s")]  # fmt: skip
    present = {key for row in rows for key in row}
    columns = base + [f"{name}.{key}" for name in names for key in shown if f"{name}.{key}" in present] + extra
    compared = len(variants) > 1

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        last = row.get(f"{names[-1]}.correct")
        return (_FLIP_ORDER.get(row.get("flip", SAME), 5), last is True, row["row_id"])

    ordered = sorted(rows, key=order)[:max_rows]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in ordered:
        flip_status = row.get("flip", "")
        status = flip_status if compared else ("ok" if row.get(f"{names[-1]}.correct") else "bad")
        cells = "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns)
        body.append(f'<tr class="{status}" data-flip="{flip_status}">{cells}</tr>')
    if compared:
        counts = Counter(row.get("flip") for row in rows)
        buttons = [
            ("all", ""),
            (f"flipped ({counts[FIXED] + counts[BROKEN]})", f"{FIXED} {BROKEN}"),
            (f"fixed ({counts[FIXED]})", FIXED),
            (f"broken ({counts[BROKEN]})", BROKEN),
            (f"other answer, same grade ({counts[CHANGED]})", CHANGED),
            (f"errors ({counts[ERROR]})", ERROR),
        ]
        filters = (
            '<div class="filters">'
            + "".join(
                f'<button type="button" data-show="{show}"{" class=on" if not show else ""}>'
                f"{html.escape(label)}</button>"
                for label, show in buttons
            )
            + "</div>"
        )
        note = (f"<p class='n'>Showing {len(ordered)} of {len(rows)} rows: rows {names[-1]} broke first, then rows it "
                f"fixed (compared with {names[0]}).</p>")  # fmt: skip
    else:
        filters, note = "", f"<p class='n'>Showing {len(ordered)} of {len(rows)} rows, mistakes first.</p>"
    table = f'<table id="rows"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f"{filters}{note}{table}"


def render_html(
    title: str, context: dict[str, str], variants: list[VariantReport], rows: list[dict[str, Any]], dpi: int,
    max_rows: int, confusion: bool = False, power: PowerCurve | None = None,
) -> str:  # fmt: skip
    """The whole report page. `variants` is baseline first, the selected variant last (one entry if the same)."""
    selected, baseline = variants[-1], variants[0]
    cards = _headline_cards(selected, baseline.name) + _count_cards(selected)
    facts = " · ".join(f"{html.escape(k)}: <b>{html.escape(v)}</b>" for k, v in context.items())
    charts = [headline_chart(variants, dpi)] if selected.headline else []
    if isinstance(selected.metrics.get("recall"), dict):
        charts.append(class_chart(selected.metrics, dpi))
    if confusion and selected.records:
        charts.append(confusion_chart(selected.records, dpi))
    if power is not None:
        charts.append(power_chart(power, dpi))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
{PAGE_CSS}</style></head><body>
<h1>{html.escape(title)}</h1><div class="facts">{facts}</div>
{warnings_banner(selected.run, selected.metrics)}
<div class="cards">{"".join(cards)}</div>
<div class="charts">{"".join(charts)}</div>
{_logged_table(variants)}
{_repeats_table(variants)}
<h2>Latency, tokens and cost</h2>{_usage_table(variants)}
<h2>Rows</h2>{_rows_table(rows, variants, max_rows)}
<script>{_FILTER_JS}</script>
</body></html>
"""
