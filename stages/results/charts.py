"""The report's charts (inline SVG, drawn with matplotlib) and its `dvc plots` data.

Every chart is a pure function of evaluated results to an SVG string the pages inline; matplotlib is imported
when a chart is drawn, so `llmops` commands start fast.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stages.results.formatting import adjusted, format_value, is_rate
from stages.results.rows import VariantReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PALETTE = {"precision": "#4C72B0", "recall": "#DD8452", "ok": "#55A868", "bad": "#C44E52", "grid": "#E5E5E5"}
VARIANT_COLOURS = ("#8C8C8C", "#4C72B0", "#DD8452", "#55A868", "#8172B3", "#937860")  # baseline grey first


def subplots(width: float, height: float, rows: int | None = None) -> tuple[Figure, Any]:
    """A figure and its axes (a list of `rows` axes, stacked, when `rows` is given); matplotlib is imported here
    so `llmops` commands start fast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(rows or 1, 1, figsize=(width, height), squeeze=False)
    return figure, (list(axes[:, 0]) if rows is not None else axes[0, 0])


def svg(figure: Figure, dpi: int) -> str:
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
    figure, axis = subplots(7, 0.45 * len(classes) + 1.2)
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
    return svg(figure, dpi)


def confusion(records: list[dict[str, Any]]) -> tuple[list[str], list[str], Counter[tuple[str, str]]]:
    labels = sorted({r["label"] for r in records})
    predicted = labels + sorted({r["prediction"] for r in records if r["prediction"] not in labels and r["prediction"]})
    return labels, predicted, Counter((r["label"], r["prediction"]) for r in records if r["prediction"])


def confusion_chart(records: list[dict[str, Any]], dpi: int) -> str:
    """Heatmap of label (rows) x prediction (columns), counts written in the cells."""
    labels, predicted, counts = confusion(records)
    grid = [[counts[(label, guess)] for guess in predicted] for label in labels]
    figure, axis = subplots(0.55 * len(predicted) + 2, 0.45 * len(labels) + 1.5)
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
    return svg(figure, dpi)


def headline_chart(variants: list[VariantReport], dpi: int) -> str:
    """One panel per headline metric: a bar per variant with its 95% CI as a whisker, the value written beside it."""
    names = list(variants[-1].headline)
    figure, axes = subplots(7.5, 0.55 * len(variants) * len(names) + 0.6 * len(names) + 0.4, rows=len(names))
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
    return svg(figure, dpi)


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
    figure, axis = subplots(7.5, 3.0)
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
    return svg(figure, dpi)


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
