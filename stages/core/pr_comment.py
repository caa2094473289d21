"""The pull request comment: the gate, significance verdicts, cost and latency, flipped rows, `dvc metrics diff`.

One comment per PR, found again by its hidden MARKER and edited in place on every push. The `gh` calls are
built here as argument lists (`find_command`, `write_command`) so they can be checked without GitHub; only
`llmops pr-comment --post` runs them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from stages.core import gate, reporting

MARKER = "<!-- llmops-pr-comment -->"
MAX_CHARS = 60_000  # GitHub refuses comments over 65,536 characters


def _value(value: float | None, rate: bool) -> str:
    return reporting.format_value(value, rate)


def significance_table(results: Sequence[gate.UseCaseResult], baseline: str) -> str:
    lines = [
        f"| use case | metric | {baseline} | PR | delta | p | verdict | test (rows) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for diff in result.diffs:
            rate = all(v is None or v <= 1 for v in (diff.baseline, diff.candidate))
            c = diff.comparison
            if c is None:
                lines.append(f"| {result.use_case} | {diff.metric} | n/a | n/a | | | no row has a value in both | |")
                continue
            delta = f"{c.effect:+.1%}" if rate else f"{c.effect:+.2f}"
            verdict = {"better": "**better**", "worse": "**worse**"}.get(c.verdict, c.verdict)
            lines.append(
                f"| {result.use_case} | {diff.metric} | {_value(diff.baseline, rate)} | {_value(diff.candidate, rate)}"
                f" | {delta} | {c.p_value:.3f} | {verdict} | {c.test} ({c.rows}) |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


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
    return gate.md_cell(text if len(text) <= limit else text[: limit - 1] + "…")


def flips_section(results: Sequence[gate.UseCaseResult], baseline: str, max_flips: int) -> str:
    """Per use case, the rows fixed or broken by the PR (broken first), at most `max_flips` of them."""
    blocks = []
    for result in results:
        if not result.flips:
            continue
        broken = sum(1 for f in result.flips if f.kind == reporting.BROKEN)
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
        f"{gate.summary_line(results)}.",
        "### Gate",
        gate.markdown_table(results),
    ]
    if missing := [r for r in results if r.baseline_missing]:
        parts.append("No baseline for " + "; ".join(f"{r.use_case} ({r.baseline_missing})" for r in missing) + ".")
    if table := significance_table(results, baseline):
        parts += ["### Significance (paired, per headline metric)", table]
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
