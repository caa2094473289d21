"""Operational figures (LLM cache counts, requests, cached tokens and cost, wall time, rows/s) stay out of the
files dvc.yaml registers as metrics, so `dvc metrics diff` shows quality, errors, latency, tokens and cost."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO, Project, StubLLM

from stages.core.io import read_json, write_jsonl
from stages.data import datasets
from stages.metrics import operations

FULL = {
    "rows": 72, "errors": 0, "invalid_answers": 14, "latency_s": {"mean": 0.5, "p50": 0.4, "p95": 0.9},
    "wall_s": 36.1, "rows_per_s": 2.0, "cache": {"hits": 70, "misses": 2, "errors": 0},
    "llm_requests": {"upstream": 2, "retries": 0},
    "tokens": {"prompt": 500, "completion": 10, "prompt_cached": 480, "completion_cached": 9},
    "cost": {"usd": 0.01, "usd_cached": 0.009},
}  # fmt: skip
METRIC_KEYS = {"rows", "errors", "invalid_answers", "latency_s", "tokens", "cost"}


def test_a_summary_splits_into_metrics_and_operations_per_variant() -> None:
    metrics, ops = operations.split({**FULL, "variant": "v2", "baseline": "v1", "variants": {"v1": FULL}})
    for block, other in ((metrics, metrics["variants"]["v1"]), (ops, ops["variants"]["v1"])):
        assert {k: v for k, v in block.items() if k not in ("variant", "baseline", "variants")} == other
    assert set(metrics["variants"]["v1"]) == METRIC_KEYS
    assert metrics["tokens"] == {"prompt": 500, "completion": 10} and metrics["cost"] == {"usd": 0.01}
    assert metrics["latency_s"] == FULL["latency_s"]
    assert ops["variants"]["v1"] == {
        "wall_s": 36.1, "rows_per_s": 2.0, "cache": FULL["cache"], "llm_requests": FULL["llm_requests"],
        "tokens": {"prompt_cached": 480, "completion_cached": 9}, "cost": {"usd_cached": 0.009},
    }  # fmt: skip
    assert (metrics["variant"], ops["variant"], metrics["baseline"], ops["baseline"]) == ("v2", "v2", "v1", "v1")
    selected = operations.of_variant(ops, "v2")
    assert selected["cache"] == FULL["cache"] and "variants" not in selected
    assert operations.of_variant(ops, "v1") == ops["variants"]["v1"]
    assert operations.of_variant({}, "v1") == {}  # an operations file not pulled


def test_the_operations_files_are_dvc_cached_outputs_and_the_metrics_files_hold_none_of_it() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, folder, metrics_file in (("run", "run", "summary.json"), ("evaluate", "eval", "metrics.json")):
        stage = stages[name]["do"]
        path = f"data/${{key}}/{folder}/operations.json"
        assert path in stage["outs"]  # a plain entry: DVC-cached, so DVC gitignores it
        assert f"--operations {path}" in " ".join(stage["cmd"].split())
        assert [next(iter(m)) for m in stage["metrics"]] == [f"data/${{key}}/{folder}/{metrics_file}"]
    for use_case in (REPO / "data").glob("*/run"):  # the committed .gitignore files DVC keeps
        for part in ("run", "eval"):
            assert "/operations.json" in (use_case.parent / part / ".gitignore").read_text().splitlines()


def test_the_run_and_evaluate_stages_write_operations_beside_their_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_llm: StubLLM
) -> None:
    """chat, two rows: the flow's calls (run) and three judges' (evaluate) counted in operations.json only."""
    from stages import evaluate, run

    monkeypatch.setenv("PF_HOME_DIRECTORY", str(tmp_path / "pf"))  # the stages set it; restored afterwards
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("defaults: []\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    llm = {**params["llm"], "base_url": stub_llm.base_url}
    chat = params["use_cases"]["chat"]
    params |= {"llm": llm, "judge": llm, "use_cases": {"chat": {
        **chat, "flow": str(REPO / chat["flow"]), "eval_flow": str(REPO / chat["eval_flow"])}}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    source = REPO / chat["dataset"]
    schema = datasets.Schema.from_config(chat["data"])
    write_jsonl(
        tmp_path / "prepared.jsonl", datasets.assign_ids(datasets.load(source, schema, 65536), schema, source)[:2]
    )
    monkeypatch.chdir(tmp_path)

    assert run.main(["--use-case", "chat", "--rows", "prepared.jsonl", "--out", "out", "--summary", "summary.json",
                     "--operations", "run_ops.json", "--cache", "run_cache"]) == 0  # fmt: skip
    evaluated = ["--run", "out", "--out", "rows", "--metrics", "metrics.json", "--operations", "eval_ops.json"]
    assert evaluate.main(["--use-case", "chat", "--rows", "prepared.jsonl", *evaluated, "--cache", "eval_cache"]) == 0
    summary, metrics = read_json(tmp_path / "summary.json"), read_json(tmp_path / "metrics.json")
    run_ops, eval_ops = read_json(tmp_path / "run_ops.json"), read_json(tmp_path / "eval_ops.json")
    for written in (summary, metrics):
        assert not {"cache", "llm_requests", "wall_s", "rows_per_s"} & set(written)
        assert set(written["tokens"]) == {"prompt", "completion"} and set(written["cost"]) == {"usd"}
    assert summary["rows"] == 2 and summary["latency_s"]["p95"] >= 0 and metrics["headline"]
    requests = len(stub_llm.requests())
    assert run_ops["cache"]["misses"] == 2 and run_ops["llm_requests"]["upstream"] == 2
    assert run_ops["cache"]["misses"] + eval_ops["cache"]["misses"] == requests  # every request the stub saw
    assert eval_ops["cache"]["hits"] + eval_ops["cache"]["misses"] == 3 * 2  # three judges per answer
    assert run_ops["wall_s"] > 0 and run_ops["rows_per_s"] > 0 and set(run_ops["tokens"]) == {
        "prompt_cached", "completion_cached"}  # fmt: skip
    assert (run_ops["variant"], eval_ops["variant"]) == (summary["variant"], metrics["variant"]) == ("v1", "v1")


def test_a_rerun_that_only_changes_cache_counters_leaves_the_metrics_files_and_git_alone(reproduced: Project) -> None:
    """chat (a flow and three judges): the session's run missed the LLM cache, a forced rerun hits it. The counters
    change in operations.json (gitignored, DVC-cached); no metrics file changes but for the latency of the rows,
    and `dvc metrics diff` shows no operational figure."""
    project = reproduced  # reproduced and committed
    project.only("chat")
    project.commit("chat alone")
    data = project.root / "data" / "chat"
    rows = len((data / "prepared.jsonl").read_text().splitlines())
    first = {name: read_json(data / name) for name in ("run/operations.json", "eval/operations.json")}
    assert first["run/operations.json"]["cache"]["misses"] == rows and first["eval/operations.json"]["cache"]["misses"]
    metrics = (data / "eval" / "metrics.json").read_text()

    project.sh("dvc", "repro", "--force", "run@chat", "evaluate@chat")
    assert read_json(data / "run" / "operations.json")["cache"] == {"hits": rows, "misses": 0, "errors": 0}
    assert read_json(data / "eval" / "operations.json")["cache"]["misses"] == 0
    assert (data / "eval" / "metrics.json").read_text() == metrics
    changed = {line[3:] for line in project.sh("git", "status", "--short").stdout.splitlines()}
    assert changed <= {"dvc.lock", "data/chat/run/summary.json"}, changed
    diff = project.sh("git", "diff", "-U0", "data/chat/run/summary.json").stdout
    assert all("latency_s" in line or '"p' in line or '"mean"' in line
               for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))  # fmt: skip
    shown = project.sh("dvc", "metrics", "diff", "HEAD", "--all", "--json").stdout
    assert "chat/run/summary.json" in shown
    for operational in ("cache", "hits", "llm_requests", "wall_s", "rows_per_s", "_cached"):
        assert operational not in shown, operational
