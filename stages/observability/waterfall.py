"""A trace as a waterfall, in plain HTML and CSS (offline, no script): one bar per span, indented under its parent,
placed and sized by its start and duration; LLM calls show model, tokens, cache and who answered; a span's
attributes open on click (<details>).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from stages.observability.otlp_json import Span

__all__ = ["CSS", "Span", "render", "summary"]

CSS = """
.wf{font-size:.78rem;border:1px solid #e3e3e3;border-radius:6px;padding:.4rem .6rem;margin:.3rem 0 1rem}
.wf .row{display:grid;grid-template-columns:minmax(260px,38%) 1fr 80px;align-items:center;gap:.5rem;
  border-bottom:1px solid #f3f3f3;padding:.12rem 0}
.wf .name{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.wf .lane{position:relative;height:14px;background:#fafafa;border-radius:3px}
.wf .bar{position:absolute;top:1px;height:12px;border-radius:3px;min-width:2px;background:#4C72B0}
.wf .bar.llm{background:#DD8452} .wf .bar.row{background:#55A868} .wf .bar.err{background:#C44E52}
.wf .bar.hit{background:#8172B3}
.wf .dur{text-align:right;color:#555;font-variant-numeric:tabular-nums}
.wf details{grid-column:1/4;color:#444} .wf details summary{cursor:pointer;color:#777;font-size:.72rem}
.wf dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .6rem;margin:.2rem 0 .4rem 1rem}
.wf dt{color:#666} .wf dd{margin:0;white-space:pre-wrap;word-break:break-word;max-height:8em;overflow:auto}
.wf .legend span{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 .25rem 0 .8rem}
"""

_SHOWN = ("gen_ai.request.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "llmops.cache",
          "llmops.answered_by", "llmops.retries")  # fmt: skip


def _depths(spans: Sequence[Span]) -> dict[str, int]:
    parents = {span.span_id: span.parent_id for span in spans}
    depths: dict[str, int] = {}
    for span in spans:
        depth, parent = 0, span.parent_id
        while parent in parents and depth < 20:
            depth, parent = depth + 1, parents[parent]
        depths[span.span_id] = depth
    return depths


def _ordered(spans: Sequence[Span]) -> list[Span]:
    """Depth-first, children in start order, so each span sits under its parent."""
    ids = {span.span_id for span in spans}
    children: dict[str, list[Span]] = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        children.setdefault(span.parent_id if span.parent_id in ids else "", []).append(span)
    out: list[Span] = []

    def walk(parent: str) -> None:
        for child in children.get(parent, []):
            out.append(child)
            walk(child.span_id)

    walk("")
    return out


def _kind(span: Span) -> str:
    if span.status == 2:
        return "err"
    if "gen_ai.operation.name" in span.attributes:
        return "hit" if span.attributes.get("llmops.cache") == "hit" else "llm"
    return "row" if "llmops.row_id" in span.attributes and span.parent_id == "" else ""


def _label(span: Span) -> str:
    a = span.attributes
    bits = [span.name]
    if "gen_ai.operation.name" in a:
        tokens = f"{a.get('gen_ai.usage.input_tokens', '?')}→{a.get('gen_ai.usage.output_tokens', '?')} tok"
        bits += [tokens, f"cache {a['llmops.cache']}" if a.get("llmops.cache") else ""]
        if a.get("llmops.answered_by"):
            bits.append(f"by {a['llmops.answered_by']}")
    return " · ".join(bit for bit in bits if bit)


def render(spans: Sequence[Span], title: str = "") -> str:
    """One trace's waterfall (an HTML fragment; include `CSS` once in the page)."""
    if not spans:
        return "<p class=n>No spans.</p>"
    start = min(span.start_ns for span in spans)
    total = max(1, max(span.end_ns for span in spans) - start)
    depths = _depths(spans)
    rows = []
    for span in _ordered(spans):
        left = 100 * (span.start_ns - start) / total
        width = max(0.3, 100 * (span.end_ns - span.start_ns) / total)
        attributes = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
                             for k, v in sorted(span.attributes.items()))  # fmt: skip
        indent = depths[span.span_id] * 14
        rows.append(
            f'<div class="row"><div class="name" style="padding-left:{indent}px" title="{html.escape(span.name)}">'
            f'{html.escape(_label(span))}</div><div class="lane"><div class="bar {_kind(span)}" '
            f'style="left:{left:.2f}%;width:{min(width, 100 - left):.2f}%"></div></div>'
            f'<div class="dur">{span.duration_s * 1000:.1f} ms</div>'
            f"<details><summary>attributes</summary><dl>{attributes}</dl></details></div>"
        )
    keys = (("#55A868", "row / request"), ("#4C72B0", "flow node"), ("#DD8452", "LLM call"),
            ("#8172B3", "LLM cache hit"), ("#C44E52", "error"))  # fmt: skip
    legend = '<div class="legend n">' + "".join(f'<span style="background:{c}"></span>{t}' for c, t in keys) + "</div>"
    head = f"<div class=n>{html.escape(title)} · {total / 1e6:.1f} ms · {len(spans)} spans</div>" if title else ""
    return f'<div class="wf">{head}{legend}{"".join(rows)}</div>'


def summary(spans: Sequence[Span]) -> dict[str, object]:
    """Row-level facts of a trace: its row id, repeat, duration, LLM calls and tokens."""
    root = next((s for s in spans if "llmops.row_id" in s.attributes and not s.parent_id), spans[0])
    llm = [s for s in spans if "gen_ai.operation.name" in s.attributes]
    return {
        "row_id": root.attributes.get("llmops.row_id", ""),
        "variant": root.attributes.get("llmops.variant", ""),
        "deployment": root.attributes.get("llmops.deployment", ""),
        "repeat": root.attributes.get("llmops.repeat", 0),
        "duration_s": root.duration_s,
        "llm_calls": len(llm),
        "input_tokens": sum(int(s.attributes.get("gen_ai.usage.input_tokens") or 0) for s in llm),
        "output_tokens": sum(int(s.attributes.get("gen_ai.usage.output_tokens") or 0) for s in llm),
    }


_OPEN_JS = """
function openTrace(){var d=document.getElementById(decodeURIComponent(location.hash.slice(1)));
if(d&&d.tagName==='DETAILS'){d.open=true;d.scrollIntoView();}}
window.addEventListener('hashchange',openTrace);openTrace();
"""


def report_section(spans: Sequence[Span], variant: str, max_rows: int) -> str:
    """The report's "Row traces" section: each row of `variant` (repeat 0) as a closed <details> that opens its
    waterfall; `#trace-<row id>` in the address opens one."""
    from stages.observability import otlp_json

    chosen = []
    for trace_spans in otlp_json.traces(spans).values():
        facts = summary(trace_spans)
        if facts["variant"] == variant and facts["repeat"] == 0 and facts["row_id"]:
            chosen.append((str(facts["row_id"]), facts, trace_spans))
    if not chosen:
        return ""
    chosen.sort(key=lambda item: item[0])
    parts = []
    for row_id, facts, trace_spans in chosen[:max_rows]:
        line = (f"{html.escape(row_id)} · {facts['duration_s'] * 1000:.0f} ms · {facts['llm_calls']} LLM call(s) · "
                f"{facts['input_tokens']}→{facts['output_tokens']} tokens")  # fmt: skip
        parts.append(f'<details id="trace-{html.escape(row_id)}"><summary>{line}</summary>'
                     f"{render(trace_spans)}</details>")  # fmt: skip
    more = f"<p class=n>{len(chosen) - max_rows} more rows in the trace file.</p>" if len(chosen) > max_rows else ""
    return (f"<style>{CSS}</style><h2>Row traces ({html.escape(variant)})</h2><p class=n>One trace per row (OTLP "
            f"JSON beside the run's outputs): open a row for its waterfall.</p>{''.join(parts)}{more}"
            f"<script>{_OPEN_JS}</script>")  # fmt: skip
