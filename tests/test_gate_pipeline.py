"""The gate and the PR comment from two real commits of a project copy, run on the stub LLM with env pr."""

from __future__ import annotations

import json

from conftest import Project, StubLLM

from stages.results import pr_comment

UC = "web_classification"
EDIT = "Answer with the first label that comes to mind.\n"  # the PR's prompt edit; the stub answers it "Movie"


def answer_every_row_right(project: Project) -> dict[str, str]:
    """Stub rules giving each dataset row its label (the row's text is unique to its prompt)."""
    pages = project.root / "use_cases" / UC / "data" / "pages.jsonl"
    rows = [json.loads(line) for line in pages.read_text().splitlines() if line.strip()]
    return {f"Text: {row['text']}\nCategory:": row["category"] for row in rows}


def test_gate_and_pr_comment_compare_a_prompt_edit_with_main(project: Project, stub_llm: StubLLM) -> None:
    right = answer_every_row_right(project)
    stub_llm.script(right)
    project.params("env=pr")
    project.repro(f"report@{UC}")
    project.commit("main: results of env pr")

    # main against a commit without results: relative checks are skipped, the floor passes (every row right).
    alone = project.sh("llmops", "gate", "--baseline", "HEAD~1", "--use-case", UC)
    assert "baseline" in alone.stdout and "relative checks skipped: HEAD~1: no results of web_classification" in (
        alone.stdout
    )
    assert "gate passed" in alone.stdout

    project.sh("git", "checkout", "-q", "-b", "pr")
    prompt = project.root / "use_cases" / UC / "flows" / "classify" / "classify_v1.jinja2"
    prompt.write_text(EDIT + prompt.read_text())
    stub_llm.script({EDIT.strip(): "Movie", **right})
    project.repro(f"report@{UC}")
    project.commit("pr: edit the v1 prompt")

    gate = project.sh("llmops", "gate", "--baseline", "main", "--use-case", UC, "--md", "gate.md", check=False)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "quality accuracy" in gate.stdout and "worse" in gate.stdout and "gate FAILED" in gate.stdout
    assert (project.root / "gate.md").read_text().startswith("| use case | check |")

    project.sh("llmops", "pr-comment", "--baseline", "main", "--use-case", UC, "--out", "comment.md", "--max-flips=3")
    body = (project.root / "comment.md").read_text()
    prepared = [json.loads(line) for line in (project.root / "data" / UC / "prepared.jsonl").read_text().splitlines()]
    not_movie = [row["row_id"] for row in prepared if row["category"] != "Movie"]
    assert body.startswith(pr_comment.MARKER) and "❌ quality gate failed" in body
    assert f"| {UC} | accuracy | 100.0% |" in body and "| **worse** | McNemar exact (12) |" in body
    # what changed, read off the two commits' dvc.lock: the prompt edit is in the flow folder run@ depends on
    assert f"### What changed\n\n- **{UC}**: use_cases/{UC}/flows/classify changed" in body
    assert body.index("### Failed") < body.index("### What changed") < body.index("### Gate")
    assert f"<b>{UC}</b>: {len(not_movie)} broken, 0 fixed" in body
    assert f"| `{not_movie[0]}` | broken |" in body and body.count("| broken |") == 3
    assert f"| {UC} |" in body.split("### Cost and latency")[1]  # tokens and p95 latency of both revisions
    diff = body.split("### Metrics diff")[1]
    assert "| Path " in diff and f"data/{UC}/eval/metrics.json" in diff and "accuracy" in diff


def test_a_changed_use_case_runs_the_rows_its_max_drop_needs_and_the_cache_keeps_the_rest(
    project: Project, stub_llm: StubLLM
) -> None:
    """`llmops size-subsets` before the PR's run: nothing changed, no override; a prompt edit sizes the use case
    (its 12-row subset stays inside the larger one) and the sized run's LLM requests are counted."""
    right = answer_every_row_right(project)
    stub_llm.script(right)
    project.params("env=pr")
    project.repro(f"report@{UC}")
    project.commit("main: results of env pr")
    small = {json.loads(line)["row_id"] for line in (project.root / "data" / UC / "prepared.jsonl").open()}

    project.sh("git", "checkout", "-q", "-b", "pr")
    unchanged = project.sh("llmops", "size-subsets", "--baseline", "main", "--env", "pr")
    assert unchanged.stdout.strip() == "" and f"{UC}: 12 rows (unchanged: the small subset)" in unchanged.stderr, (
        unchanged.stderr
    )

    # A conf/ edit the PR did not compose into params.yaml is seen too: the sizing composes conf/ as the run will.
    conf = project.root / "conf" / "use_cases" / f"{UC}.yaml"
    original = conf.read_text()
    conf.write_text(original.replace("variant: ${variant.name}", "variant: v2"))
    swapped = project.sh("llmops", "size-subsets", "--baseline", "main", "--env", "pr")
    assert swapped.stdout.split()[0].startswith(f"+env.subset.by_use_case.{UC}="), swapped.stderr
    assert f"{UC}: 12 rows (unchanged" not in swapped.stderr and f"use_cases.{UC}.variant" in swapped.stderr
    conf.write_text(original)

    prompt = project.root / "use_cases" / UC / "flows" / "classify" / "classify_v1.jinja2"
    prompt.write_text("{# a comment the model never sees #}" + prompt.read_text())  # rendered away: same answers
    sized = project.sh("llmops", "size-subsets", "--baseline", "main", "--env", "pr")
    dataset = len([line for line in (project.root / "use_cases" / UC / "data" / "pages.jsonl").open() if line.strip()])
    assert sized.stdout.split() == [f"+env.subset.by_use_case.{UC}={dataset}"]  # fewer rows than max_drop needs
    assert f"capped by the dataset at {dataset}); use_cases/{UC}/flows/classify changed" in sized.stderr, sized.stderr

    # unsized, the comment costs no LLM request, and the gate sees it had no effect: it passes
    asked = len(stub_llm.requests())
    project.repro(f"report@{UC}")
    assert len(stub_llm.requests()) == asked
    passed = project.sh("llmops", "gate", "--baseline", "main", "--use-case", UC)
    assert "gate passed" in passed.stdout
    project.sh("llmops", "pr-comment", "--baseline", "main", "--use-case", UC, "--out", "comment.md")
    comment = (project.root / "comment.md").read_text()
    assert f"- **{UC}**: use_cases/{UC}/flows/classify changed (no effect on these 12 rows: every LLM" in comment

    project.params("env=pr", *sized.stdout.split())
    project.repro(f"report@{UC}")
    prepared = {json.loads(line)["row_id"] for line in (project.root / "data" / UC / "prepared.jsonl").open()}
    assert len(prepared) == dataset and small < prepared
    # a comment renders to the same prompt: the LLM cache answers the 12 rows main ran, the others are asked once
    assert len(stub_llm.requests()) - asked == dataset - len(small)
