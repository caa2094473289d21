"""`llmops monitor`: an offline HTML dashboard of one deployment endpoint over time.

From the production log (every request the router answered, and its shadow's copies), per deployment side by side
(live A/B and shadow): requests, error rate, guardrail refusals, p50/p95 latency, tokens and cost, fallbacks, and
the reference-free quality of the answers (success; `valid` when the flow declares it) per time bucket, with the
last `llmops evaluate-production` verdicts when its JSON is there. Charts are inline SVG (matplotlib): the page
needs no network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from stages.metrics import cost
from stages.observability import waterfall
from stages.results import charts as svg_charts
from stages.results import pages
from stages.results.formatting import format_usd, headline_text

COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


@dataclass
class Series:
    """One deployment's requests bucketed over time."""

    name: str
    variant: str
    shadow: bool
    requests: list[dict[str, Any]] = field(default_factory=list)

    def totals(self, price: cost.Price | None) -> dict[str, Any]:
        ok = [r for r in self.requests if r["status"] == 200]
        latencies = [float(r["latency_s"]) for r in ok]
        prompt = sum(int((r.get("llm") or {}).get("prompt_tokens", 0)) for r in self.requests)
        completion = sum(int((r.get("llm") or {}).get("completion_tokens", 0)) for r in self.requests)
        valid = [bool((r.get("outputs") or {}).get("valid")) for r in ok if isinstance(r.get("outputs"), dict)
                 and "valid" in r["outputs"]]  # fmt: skip
        return {
            "requests": len(self.requests),
            "errors": sum(1 for r in self.requests if r["status"] >= 500),
            "refused": sum(1 for r in self.requests if 400 <= r["status"] < 500),
            "flagged": sum(1 for r in self.requests if r.get("flags")),
            "fallbacks": sum(int((r.get("llm") or {}).get("fallbacks", 0)) for r in self.requests),
            "p50": float(np.percentile(latencies, 50)) if latencies else None,
            "p95": float(np.percentile(latencies, 95)) if latencies else None,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_usd": price.usd(prompt, completion) if price else None,
            "success": len(ok) / len(self.requests) if self.requests else None,
            "valid": sum(valid) / len(valid) if valid else None,
        }


def _time(record: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(str(record["ts"])).timestamp()


def series(log: Sequence[Mapping[str, Any]]) -> dict[str, Series]:
    """The log's scoring requests per deployment (live first, shadows last), in time order."""
    out: dict[str, Series] = {}
    for record in sorted(log, key=_time):
        if not record.get("deployment"):
            continue
        name = str(record["deployment"])
        out.setdefault(name, Series(name, str(record.get("variant") or ""), bool(record.get("shadow"))))
        out[name].requests.append(dict(record))
    return dict(sorted(out.items(), key=lambda item: item[1].shadow))


def buckets(log: Sequence[Mapping[str, Any]], target: int = 24) -> tuple[float, float]:
    """The first bucket's start and the bucket width (s): about `target` buckets, a round width of >= 1 s."""
    times = [_time(r) for r in log if r.get("ts")]
    if not times:
        return 0.0, 60.0
    span = max(times) - min(times)
    nice = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
    width = next((w for w in nice if span / w <= target), 86400 * math.ceil(span / 86400 / target))
    return math.floor(min(times) / width) * width, float(width)


def bucketed(s: Series, start: float, width: float, count: int) -> dict[str, list[float]]:
    """Per bucket: requests, error rate, p50/p95 latency of successes, tokens, success rate."""
    slots: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    for record in s.requests:
        slots[min(count - 1, int((_time(record) - start) // width))].append(record)
    out: dict[str, list[float]] = {k: [] for k in ("requests", "error_rate", "p50", "p95", "tokens", "success")}
    for slot in slots:
        lat = [float(r["latency_s"]) for r in slot if r["status"] == 200]
        out["requests"].append(len(slot))
        out["error_rate"].append(sum(r["status"] >= 500 for r in slot) / len(slot) if slot else math.nan)
        out["p50"].append(float(np.percentile(lat, 50)) if lat else math.nan)
        out["p95"].append(float(np.percentile(lat, 95)) if lat else math.nan)
        out["tokens"].append(sum(sum(int(v) for k, v in (r.get("llm") or {}).items() if k.endswith("_tokens"))
                                 for r in slot))  # fmt: skip
        out["success"].append(sum(r["status"] == 200 for r in slot) / len(slot) if slot else math.nan)
    return out


def charts(all_series: Mapping[str, Series], log: Sequence[Mapping[str, Any]], dpi: int) -> str:
    """Small multiples over time, one line per deployment (shadows dashed)."""
    start, width = buckets(log)
    end = max(_time(r) for r in log)
    count = max(1, int((end - start) // width) + 1)
    x = [datetime.fromtimestamp(start + width * (i + 0.5)) for i in range(count)]
    panels = [("requests", f"requests per {int(width)} s", False), ("error_rate", "error rate (5xx)", True),
              ("p50", "latency p50 (s)", False), ("p95", "latency p95 (s)", False),
              ("tokens", "tokens (prompt + completion)", False), ("success", "success rate (200)", True)]  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, grid = plt.subplots(3, 2, figsize=(11, 8.2), sharex=True)
    data = {name: bucketed(s, start, width, count) for name, s in all_series.items()}

    for ax, (key, title, rate) in zip(grid.flat, panels, strict=True):
        for i, (name, s) in enumerate(all_series.items()):
            label = f"{name} ({s.variant}){' shadow' if s.shadow else ''}"
            ax.plot(x, data[name][key], color=COLORS[i % len(COLORS)], marker="o", markersize=3, linewidth=1.6,
                    linestyle="--" if s.shadow else "-", label=label)  # fmt: skip
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(alpha=0.25)
        ax.spines[["top", "right"]].set_visible(False)
        if rate:
            ax.set_ylim(-0.03, 1.03)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.tick_params(labelsize=8)
    grid.flat[0].legend(fontsize=8, frameon=False)
    figure.autofmt_xdate()
    figure.tight_layout()
    return svg_charts.svg(figure, dpi)


def _fmt(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "rate":
        return f"{value:.1%}"
    if kind == "s":
        return f"{value:.3f} s"
    if kind == "usd":
        return format_usd(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"


def table(all_series: Mapping[str, Series], price: cost.Price | None) -> str:
    columns = [("requests", ""), ("errors", ""), ("refused", ""), ("flagged", ""), ("fallbacks", ""),
               ("p50", "s"), ("p95", "s"), ("prompt_tokens", ""), ("completion_tokens", ""), ("cost_usd", "usd"),
               ("success", "rate"), ("valid", "rate")]  # fmt: skip
    head = "<tr><th>deployment</th><th>variant</th><th>role</th>" + "".join(
        f"<th>{html.escape(name.replace('_', ' '))}</th>" for name, _ in columns) + "</tr>"  # fmt: skip
    rows = []
    for name, s in all_series.items():
        t = s.totals(price)
        role = "shadow (never returned)" if s.shadow else "live"
        cells = "".join(f"<td>{_fmt(t[key], kind)}</td>" for key, kind in columns)
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(s.variant)}</td><td>{role}</td>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _verdicts(evaluation: Mapping[str, Any] | None) -> str:
    if not evaluation:
        return ("<p class=n>No production evaluation yet: run <code>llmops evaluate-production</code> for the "
                "quality scores and the shadow verdict.</p>")  # fmt: skip
    parts = []
    for part in ("reference_free", "evaluated"):
        for name, metrics in (evaluation.get(part) or {}).items():
            text = headline_text(metrics, evaluation.get("baseline"))
            parts.append(f"<li><b>{html.escape(name)}</b> ({part.replace('_', '-')}): {html.escape(text)}</li>")
    for part, by_name in (evaluation.get("shadow") or {}).items():
        for name, metrics in by_name.items():
            if name != "live":
                text = headline_text(metrics, "live")
                parts.append(f"<li class=better><b>shadow {html.escape(name)} vs live</b> ({part.replace('_', '-')},"
                             f" same requests): {html.escape(text)}</li>")  # fmt: skip
    return f"<ul>{''.join(parts)}</ul>"


def render(
    title: str, facts: Mapping[str, str], log: Sequence[Mapping[str, Any]], price: cost.Price | None,
    evaluation: Mapping[str, Any] | None, trace_html: str, dpi: int,
) -> str:  # fmt: skip
    """The dashboard page."""
    all_series = series(log)
    live = [s for s in all_series.values() if not s.shadow]
    total = sum(len(s.requests) for s in live)
    errors = sum(1 for s in live for r in s.requests if r["status"] >= 500)
    refused = sum(1 for s in live for r in s.requests if 400 <= r["status"] < 500)
    lat = [float(r["latency_s"]) for s in live for r in s.requests if r["status"] == 200]
    tokens = sum(sum(int(v) for k, v in (r.get("llm") or {}).items() if k.endswith("_tokens"))
                 for s in live for r in s.requests)  # fmt: skip
    cards = [
        pages.card("requests (live)", f"{total:,}"),
        pages.card("error rate", _fmt(errors / total if total else None, "rate"), f"{errors} 5xx"),
        pages.card("refused (4xx)", f"{refused:,}", "guardrails, schema, size"),
        pages.card("latency p50", _fmt(float(np.percentile(lat, 50)) if lat else None, "s")),
        pages.card("latency p95", _fmt(float(np.percentile(lat, 95)) if lat else None, "s")),
        pages.card("tokens", f"{tokens:,}"),
    ]
    fact_html = " · ".join(f"{html.escape(k)}: <b>{html.escape(v)}</b>" for k, v in facts.items())
    chart = charts(all_series, log, dpi) if log else "<p class=n>No requests yet.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{pages.PAGE_CSS}{waterfall.CSS}</style></head><body>
<h1>{html.escape(title)}</h1><div class="facts">{fact_html}</div>
<div class="cards">{"".join(cards)}</div>
<h2>Over time, A/B and shadow side by side</h2><div class="charts">{chart}</div>
<h2>Per deployment</h2>{table(all_series, price)}
<h2>Quality (reference-free) and verdicts</h2>{_verdicts(evaluation)}
{trace_html}
</body></html>
"""


def slowest_traces(spans: Sequence[waterfall.Span], count: int = 3) -> str:
    """The `count` slowest request traces as waterfalls."""
    from stages.observability import otlp_json

    traced = sorted(otlp_json.traces(spans).values(), key=lambda t: -waterfall.summary(t)["duration_s"])[:count]
    if not traced:
        return ""
    parts = []
    for spans_of in traced:
        facts = waterfall.summary(spans_of)
        title = (
            f"request {facts['row_id']} · {facts['deployment']} ({facts['variant']}) · {facts['llm_calls']} LLM call(s)"
        )
        parts.append(waterfall.render(spans_of, title))
    return f"<h2>Slowest requests: their traces</h2>{''.join(parts)}"
