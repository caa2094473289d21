"""The pull request comment: what failed, what was inconclusive and what changed, then the gate (the passing
checks of unchanged use cases folded), significance verdicts with adjusted p and MDE or margin, cost and
latency, flipped rows, `dvc metrics diff`.

One comment per PR, found again by its hidden MARKER and edited in place on every push. The `gh` calls are
built here as argument lists (`find_command`, `write_command`) so they can be checked without GitHub; only
`llmops pr-comment --post` runs them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from stages.results import gate
from stages.results import gate_tables as render
from stages.results.formatting import format_value
from stages.results.rows import BROKEN

MARKER = "<!-- llmops-pr-comment -->"
MAX_CHARS = 60_000  # GitHub refuses comments over 65,536 characters


def _value(value: float | None, rate: bool) -> str:
    return format_value(value, rate)


def _amount(value: float | None, rate: bool) -> str:
    if value is None:
        return "none"
    return f"{100 * value:.1f} pts" if rate else f"{value:.2f}"


def _seen(quality: gate.Quality, rate: bool) -> str:
    """'MDE 12.0 pts' for a no-drop check, 'margin 5.0 pts' / 'margin ±5.0 pts' for the others."""
    if quality.require == gate.NONINFERIOR:
        return f"margin {_amount(quality.max_drop, rate)}"
    if quality.require == gate.EQUIVALENT:
        return f"margin ±{_amount(quality.max_drop, rate)}"
    return f"MDE {_amount(quality.mde, rate)}" if quality.mde is not None else "MDE: none on these rows"


def significance_table(results: Sequence[gate.UseCaseResult], baseline: str) -> str:
    lines = [
        f"| use case | metric | {baseline} | PR | delta | p | verdict | test (rows) | adjusted p | MDE / margin "
        "| gate | reading |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        qualities = {q.metric: q for q in result.quality}
        checks = {c.check: c for c in result.checks}
        for diff in result.diffs:
            rate = all(v is None or v <= 1 for v in (diff.baseline, diff.candidate))
            c = diff.comparison
            if c is None:
                lines.append(f"| {result.use_case} | {diff.metric} | n/a | n/a | | | no row has a value in both | |"
                             " | | | |")  # fmt: skip
                continue
            q = qualities.get(diff.metric)
            alpha = result.thresholds.alpha if result.thresholds else 0.05
            p = q.p_adjusted if q is not None and q.p_adjusted is not None else c.p_value
            said = c.verdict if p < alpha else "no significant difference"
            delta = f"{c.effect:+.1%}" if rate else f"{c.effect:+.2f}"
            verdict = {"better": "**better**", "worse": "**worse**"}.get(said, said)
            adjusted = f"{q.p_adjusted:.3f} ({q.method})" if q is not None and q.p_adjusted is not None else "n/a"
            check = checks.get(f"quality {diff.metric}")
            shown = render.verdict_md(check) if check is not None else ""
            seen = _seen(q, rate and (q.max_drop < 1)) if q is not None else ""
            reading = render.md_cell(q.reading) if q is not None else ""
            lines.append(
                f"| {result.use_case} | {diff.metric} | {_value(diff.baseline, rate)} | {_value(diff.candidate, rate)}"
                f" | {delta} | {c.p_value:.3f} | {verdict} | {c.test} ({c.rows}) | {adjusted} | {seen} | {shown}"
                f" | {reading} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def _bullet(check: gate.Check) -> str:
    """One line of the comment's lead: the check, its value against its baseline and limit, and its note."""
    against = f" (baseline {check.baseline})" if check.baseline else ""
    note = f"; {render.md_cell(check.note)}" if check.note else ""
    value, limit = render.md_cell(check.value), render.md_cell(check.limit)
    return f"- {render.verdict_md(check)} **{check.use_case}** {check.check}: {value}{against}, limit {limit}{note}"


def lead(results: Sequence[gate.UseCaseResult]) -> str:
    """What failed, what was inconclusive and what changed: the top of the comment."""
    checks = [c for r in results for c in r.checks]
    failed = [_bullet(c) for c in checks if c.verdict == gate.FAIL]
    unsure = [_bullet(c) for c in checks if c.verdict == gate.INCONCLUSIVE]
    parts = []
    if failed:
        parts += [f"### Failed ({len(failed)})", "\n".join(failed)]
    if unsure:
        parts += [f"### Inconclusive ({len(unsure)})", "\n".join(unsure)]
    touched = [r for r in results if r.changed or r.inert]
    lines = [
        f"- **{r.use_case}**: "
        + (
            "; ".join(render.md_cell(item) for item in r.changes)
            if r.changes
            else "unknown (a dvc.lock was unreadable)"
        )
        + (f" ({r.inert})" if r.inert else "")
        for r in touched
    ]
    same = [r.use_case for r in results if not r.changed and not r.inert]
    if same:
        lines.append(f"- unchanged: {', '.join(same)}")
    parts += ["### What changed", "\n".join(lines) or "Nothing."]
    return "\n\n".join(parts)


def gate_tables(results: Sequence[gate.UseCaseResult]) -> str:
    """The checks of changed use cases and every check that did not pass; the passing checks of unchanged use
    cases folded into a <details> block."""
    shown, folded = [], []
    for result in results:
        for check in result.checks:
            quiet = not result.changed and check.verdict in (gate.PASS, gate.SKIP)
            (folded if quiet else shown).append(check)
    parts = [render.markdown_table(results, shown)] if shown else []
    if folded:
        names = sorted({c.use_case for c in folded})
        parts.append(
            f"<details><summary>{len(folded)} passing checks of unchanged use cases ({', '.join(names)})</summary>"
            f"\n\n{render.markdown_table(results, folded)}\n\n</details>"
        )
    return "\n\n".join(parts)


def _change(base: float | None, new: float | None) -> str:
    if base is None or new is None:
        return "n/a"
    return f"{(new - base) / base:+.0%}" if base else ("+0%" if new == 0 else "new")


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def usage_table(results: Sequence[gate.UseCaseResult], baseline: str) -> str:
    lines = [
        f"| use case | tokens/row {baseline} | tokens/row PR | change | p95 latency {baseline} | p95 latency PR "
        "| change | rows answered by the LLM (not its cache) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if result.usage is None:
            continue
        base, new = result.usage
        lines.append(
            f"| {result.use_case} | {_num(base.tokens_per_row, '.1f')} | {_num(new.tokens_per_row, '.1f')}"
            f" | {_change(base.tokens_per_row, new.tokens_per_row)} | {_num(base.p95_latency_s, '.3f')} s"
            f" | {_num(new.p95_latency_s, '.3f')} s | {_change(base.p95_latency_s, new.p95_latency_s)}"
            f" | {base.llm_answered_rows} / {new.llm_answered_rows} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return render.md_cell(text if len(text) <= limit else text[: limit - 1] + "…")


def flips_section(results: Sequence[gate.UseCaseResult], baseline: str, max_flips: int) -> str:
    """Per use case, the rows fixed or broken by the PR (broken first), at most `max_flips` of them."""
    blocks = []
    for result in results:
        if not result.flips:
            continue
        broken = sum(1 for f in result.flips if f.kind == BROKEN)
        fixed = len(result.flips) - broken
        lines = [
            f"<details><summary><b>{result.use_case}</b>: {broken} broken, {fixed} fixed</summary>",
            "",
            f"| row | flip | label | {baseline} output | PR output |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| `{f.row_id}` | {f.kind} | {_short(f.label, 40)} | {_short(f.old)} | {_short(f.new)} |"
            for f in result.flips[:max_flips]
        ]
        if len(result.flips) > max_flips:
            lines.append(f"\n… and {len(result.flips) - max_flips} more: `llmops compare {baseline} workspace`")
        blocks.append("\n".join([*lines, "", "</details>"]))
    return "\n\n".join(blocks)


def compose(
    results: Sequence[gate.UseCaseResult],
    *,
    baseline: str,
    baseline_rev: str,
    env: str,
    metrics_diff_md: str,
    max_flips: int = 10,
) -> str:
    """The comment's markdown, starting with MARKER. `metrics_diff_md` is `dvc metrics diff <baseline> --md`."""
    passed = all(r.passed for r in results)
    head = "✅ quality gate passed" if passed else "❌ quality gate failed"
    parts = [
        MARKER,
        f"## LLMOps: {head}",
        f"Env `{env}`, compared with `{baseline}` (`{baseline_rev[:10]}`) on the rows both evaluated (stable row ids). "
        f"{render.summary_line(results)}.",
        lead(results),
        "### Gate",
        gate_tables(results),
    ]
    if missing := [r for r in results if r.baseline_missing]:
        parts.append("No baseline for " + "; ".join(f"{r.use_case} ({r.baseline_missing})" for r in missing) + ".")
    if table := significance_table(results, baseline):
        parts += ["### Significance (paired, per headline metric; MDE: the drop seen 4 times in 5)", table]
    if blocks := [r.parity for r in results if r.parity]:
        parts += ["### Parity (two flows of one use case on the same rows, e.g. MAF vs prompt flow)", *blocks]
    if table := usage_table(results, baseline):
        parts += ["### Cost and latency", table]
    parts += ["### Flipped rows", flips_section(results, baseline, max_flips) or f"No row flipped against {baseline}."]
    head_text = "\n\n".join(parts)
    diff = metrics_diff_md.strip() or "No metric changed."
    room = MAX_CHARS - len(head_text) - 200
    if len(diff) > room:
        diff = diff[: max(room, 0)] + f"\n\n… cut to fit a comment: run `dvc metrics diff {baseline}`."
    details = f"<details><summary><code>dvc metrics diff {baseline} --md</code></summary>\n\n{diff}\n\n</details>"
    return f"{head_text}\n\n### Metrics diff\n\n{details}\n"


def find_command(repo: str, pr: int) -> list[str]:
    """`gh` call printing the ids of the PR's comments that carry MARKER (one per line)."""
    query = f'.[] | select(.body | contains("{MARKER}")) | .id'
    return ["gh", "api", "--paginate", f"repos/{repo}/issues/{pr}/comments", "--jq", query]


def write_command(repo: str, pr: int, payload: Path, comment_id: str | None) -> list[str]:
    """`gh` call editing comment `comment_id` in place, or adding the comment when there is none yet."""
    if comment_id:
        return ["gh", "api", "--method", "PATCH", f"repos/{repo}/issues/comments/{comment_id}", "--input", str(payload)]
    return ["gh", "api", "--method", "POST", f"repos/{repo}/issues/{pr}/comments", "--input", str(payload)]


def payload(body: str) -> str:
    """The JSON request body both write calls send."""
    return json.dumps({"body": body})


def existing_id(find_output: str) -> str | None:
    """The first comment id `find_command` printed (None: no comment yet)."""
    ids = [line.strip() for line in find_output.splitlines() if line.strip()]
    return ids[0] if ids else None
