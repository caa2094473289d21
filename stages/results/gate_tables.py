"""The quality gate's results rendered: the markdown table (PR comment, reports/gate.md), the terminal table and
the summary line. Render only: the checks are stages/results/gate.py's."""

from __future__ import annotations

from collections.abc import Sequence

from stages.results.gate import FAIL, INCONCLUSIVE, PASS, SKIP, Check, UseCaseResult

HEADER = ("use case", "check", "value", "baseline", "limit", "verdict", "note")


def _cells(check: Check) -> tuple[str, ...]:
    verdict = check.verdict
    if verdict == INCONCLUSIVE:
        verdict = "INCONCLUSIVE (fails)" if check.blocking else "inconclusive (warns)"
    return (check.use_case, check.check, check.value, check.baseline, check.limit, verdict, check.note)


def md_cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


_VERDICT_MD = {PASS: "✅ pass", FAIL: "❌ **FAIL**", SKIP: "➖ skip", INCONCLUSIVE: "⚠️ inconclusive"}


def markdown_table(results: Sequence[UseCaseResult], checks: Sequence[Check] | None = None) -> str:
    """The checks of `results` (or only `checks`) as a markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for check in [c for r in results for c in r.checks] if checks is None else checks:
        cells = [md_cell(c) for c in _cells(check)]
        cells[5] = verdict_md(check)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_md(check: Check) -> str:
    if check.verdict == INCONCLUSIVE:
        return "❓ **inconclusive, fails**" if check.blocking else "⚠️ inconclusive, warns"
    return _VERDICT_MD[check.verdict]


def text_table(results: Sequence[UseCaseResult]) -> str:
    rows = [HEADER] + [_cells(check) for result in results for check in result.checks]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    lines = (
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows
    )
    return "\n".join(line.rstrip() for line in lines)


def summary_line(results: Sequence[UseCaseResult]) -> str:
    failed = [check for result in results for check in result.checks if check.fails]
    if not failed:
        return f"gate passed: {sum(len(r.checks) for r in results)} checks, none failed"
    names = ", ".join(f"{c.use_case} {c.check}" for c in failed)
    return f"gate FAILED: {len(failed)} of {sum(len(r.checks) for r in results)} checks ({names})"
