"""Numbers of results as text, for terminals, logs, the PR comment and the report: metric values (rates as
percentages), headline lines with their intervals and verdicts, judges' results, costs."""

from __future__ import annotations

from typing import Any


def is_rate(results: list[dict[str, Any]]) -> bool:
    """Rates (accuracy, F1, similarity) live in [0, 1]; anything beyond is a score on its own scale (a judge's 1-5)."""
    return all((r.get("ci_high") or 0) <= 1 and (r.get("value") or 0) >= 0 for r in results)


def format_value(value: float | None, rate: bool) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if rate else f"{value:.2f}"


def _adjustment(result: dict[str, Any]) -> str:
    """'adjusted p=0.12, Benjamini-Hochberg over 6' when the comparison's p-value was adjusted, else ''."""
    if result.get("p_adjusted") is None:
        return ""
    return f"adjusted p={result['p_adjusted']:.2g}, {result.get('adjustment', '')}"


def adjusted(result: dict[str, Any]) -> str:
    return f" ({text})" if (text := _adjustment(result)) else ""


def headline_text(headline: dict[str, dict[str, Any]], baseline: str | None = None) -> str:
    """'accuracy 56.9% [45.2%, 68.1%]  relevance 3.40 [3.1, 3.7] +0.20 vs v1 (better)' for terminals and logs; with
    repeats each metric adds its spread: '±2.1% over 3 repeats, 80% stable'."""
    parts = []
    for name, result in headline.items():
        rate = is_rate([result])
        low, high = format_value(result.get("ci_low"), rate), format_value(result.get("ci_high"), rate)
        text = f"{name} {format_value(result.get('value'), rate)} [{low}, {high}]"
        if spread := result.get("repeats"):
            text += f" ±{format_value(spread['std'], rate)} over {spread['k']} repeats, {spread['stable']:.0%} stable"
        if result.get("verdict"):
            delta = f"{result['delta']:+.1%}" if rate else f"{result['delta']:+.2f}"
            text += f" {delta} vs {baseline} ({result['verdict']})"
            if result.get("p_adjusted") is not None:
                text += f" p={result['p_value']:.3g}, {_adjustment(result)}"
        parts.append(text)
    return "  ".join(parts)


def judges(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """LLM-as-judge results, `<judge>: {mean, scored, errors}` (mean on the judge's 1-5 scale)."""
    return {
        key: value for key, value in metrics.items() if isinstance(value, dict) and {"scored", "errors"} <= set(value)
    }


def total_cost(run: dict[str, Any], metrics: dict[str, Any]) -> float | None:
    """USD of a variant's flow calls and its judge calls; None when either has no price (see conf/prices.yaml)."""
    parts = [block["cost"].get("usd") for block in (run, metrics) if isinstance(block.get("cost"), dict)]
    if not parts or None in parts:
        return None
    return float(sum(parts))


def format_usd(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def rejected_note(rejected: int, rows: int) -> str:
    """What `judge_rejected` rows of `rows` mean."""
    return (
        f"{rejected} of {rows} rows not evaluated: the judge LLM rejected their request (HTTP 400, 413 or 422, "
        "e.g. a prompt longer than the model's context; not retried: the same request fails the same way)"
    )
