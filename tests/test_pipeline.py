"""The stage graph end to end on the stub LLM: outputs, incrementality, variants and experiments."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import yaml
from conftest import Project, StubLLM

UC = "web_classification"
QA = "general_qa"
NER = "named_entity_recognition"
MATH = "math_coding"
CODE = "code_generation"


def stages(*use_cases: str, only: tuple[str, ...] = ("prepare", "run", "evaluate", "report")) -> set[str]:
    return {f"{stage}@{use_case}" for use_case in use_cases for stage in only}


ALL_STAGES = stages(UC, NER, QA, MATH, CODE)


def test_repro_produces_outputs_metrics_and_report(project: Project, stub_llm: StubLLM) -> None:
    assert set(project.repro()) == ALL_STAGES
    data = project.root / "data" / UC
    rows = [json.loads(line) for line in (data / "run" / "outputs.jsonl").read_text().splitlines()]
    prepared = (data / "prepared.jsonl").read_text().splitlines()
    assert len(rows) == len(prepared) == 72
    assert all(row["error"] is None and row["latency_s"] >= 0 for row in rows)
    # The stub answers some prompts with a word that is not a label: kept raw, mapped to Other, never dropped.
    others = [row for row in rows if row["outputs"]["category"] == "Other"]
    assert others and all(row["outputs"]["raw"].strip() == "banana" and not row["outputs"]["valid"] for row in others)
    assert len(stub_llm.requests()) == 72 + 48 + 48 + 48 + 44

    metrics = json.loads((data / "eval" / "metrics.json").read_text())
    labels = [json.loads(line)["category"] for line in prepared]
    predictions = {row["row_id"]: row["outputs"]["category"] for row in rows}
    expected = sum(json.loads(p)["category"] == predictions[json.loads(p)["row_id"]] for p in prepared) / 72
    assert metrics["accuracy"] == round(expected, 4)
    assert set(metrics["precision"]) == set(metrics["recall"]) == set(labels)

    shown = json.loads(project.sh("dvc", "metrics", "show", "--json").stdout)
    assert any("accuracy" in json.dumps(entry) for entry in shown.values())
    html = (data / "report" / "report.html").read_text()
    assert "<svg" in html and f"{metrics['accuracy']:.1%}" in html
    assert (data / "report" / "report.csv").read_text().count("\n") == 73

    qa = project.root / "data" / QA
    answers = [json.loads(line) for line in (qa / "run" / "outputs.jsonl").read_text().splitlines()]
    assert len(answers) == 48 and all(isinstance(row["outputs"]["output"], str) for row in answers)
    qa_metrics = json.loads((qa / "eval" / "metrics.json").read_text())
    assert qa_metrics["rows"] == 48 and 0 <= qa_metrics["exact_match"] <= qa_metrics["contains_match"] <= 1

    ner = json.loads((project.root / "data" / NER / "eval" / "metrics.json").read_text())
    # The stub never answers in the "type: name" format: no entities, so recall is 0 and nothing is invented.
    assert ner["rows"] == 48 and ner["exact_recall"] == 0.0 and ner["exact_precision"] == 0.0


def test_prompt_flow_stays_offline_and_quiet_under_the_project(project: Project) -> None:
    project.repro()
    home = Path(project.env["HOME"])
    assert not (home / ".promptflow").exists(), "prompt flow must not write to ~/.promptflow"
    pf_home = project.root / ".llmops" / "pf"
    pf_config = yaml.safe_load((pf_home / "pf.yaml").read_text())
    assert pf_config["telemetry"] == {"enabled": False} and pf_config["trace"] == {"destination": "none"}
    version_check = json.loads((pf_home / "pf_version_check.json").read_text())
    assert version_check["last_check_time"].startswith("2999")  # prompt flow never asks PyPI
    with socket.socket() as sock:  # no detached trace service left behind
        assert sock.connect_ex(("127.0.0.1", 23333)) != 0
    flows = project.root / "use_cases" / UC / "flows"
    assert not list(flows.rglob(".promptflow")), "running flows must not litter the flow folders"


def test_only_what_changed_reruns(project: Project) -> None:
    assert set(project.repro()) == ALL_STAGES
    assert project.repro() == []  # nothing changed

    # A prompt edit reruns that use case's run/evaluate/report, and nothing of any other use case.
    prompt = project.root / "use_cases" / UC / "flows" / "classify" / "classify_v1.jinja2"
    prompt.write_text(prompt.read_text().replace("exactly one category", "one category"))
    assert set(project.repro()) == stages(UC, only=("run", "evaluate", "report"))
    prompty = project.root / "use_cases" / QA / "flows" / "answer" / "answer.prompty"
    prompty.write_text(prompty.read_text().replace("in a few words", "in as few words as possible"))
    assert set(project.repro()) == stages(QA, only=("run", "evaluate", "report"))

    # An evaluation-flow edit that changes the metrics reruns evaluate and report...
    aggregate = project.root / "use_cases" / UC / "flows" / "evaluate" / "aggregate.py"
    aggregate.write_text(aggregate.read_text().replace("round(value, 4)", "round(value, 2)"))
    assert project.repro() == [f"evaluate@{UC}", f"report@{UC}"]
    # ...one that changes no output reruns evaluate only: DVC stops the cascade at unchanged outputs.
    grade = project.root / "use_cases" / UC / "flows" / "evaluate" / "grade.py"
    grade.write_text(grade.read_text() + "\n# a comment\n")
    assert project.repro() == [f"evaluate@{UC}"]

    config = project.root / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("chart_dpi: 110", "chart_dpi: 90"))
    project.params()
    assert set(project.repro()) == stages(UC, NER, QA, MATH, CODE, only=("report",))


def test_env_pr_runs_a_small_deterministic_subset(project: Project) -> None:
    project.params("env=pr")
    project.repro()
    first = (project.root / "data" / UC / "prepared.jsonl").read_text()
    assert len(first.splitlines()) == 12
    assert len((project.root / "data" / QA / "prepared.jsonl").read_text().splitlines()) == 12
    (project.root / "data" / UC / "prepared.jsonl").unlink()
    project.sh("dvc", "repro", "--force", f"prepare@{UC}")
    assert (project.root / "data" / UC / "prepared.jsonl").read_text() == first


def test_exp_run_variant_v2_and_exp_show(project: Project, stub_llm: StubLLM) -> None:
    project.repro()
    project.commit("baseline v1")
    before = len(stub_llm.requests())
    result = project.sh("dvc", "exp", "run", "-S", "variant=v2")
    assert "Running stage 'prepare" not in result.stdout  # only stages whose params changed
    v2_prompts = [r["body"]["prompt"] for r in stub_llm.requests()[before:]]
    assert len(v2_prompts) == 72 + 48 + 48 + 48 + 44
    assert sum(p.startswith("Find the person, location, organization names") for p in v2_prompts) == 48
    assert sum(p.startswith("Web page categories:") for p in v2_prompts) == 72
    assert sum(p.startswith("Question:") for p in v2_prompts) == 48
    assert sum(p.startswith("# Each math question") for p in v2_prompts) == 48
    assert sum(p.startswith('def larger(a, b):\n    """') for p in v2_prompts) == 44

    shown = json.loads(project.sh("dvc", "exp", "show", "--json").stdout)
    variants = {}
    for commit in shown:
        for rev in [commit, *[r for exp in commit.get("experiments") or [] for r in exp.get("revs", [])]]:
            data = rev.get("data") or {}
            params = data.get("params", {}).get("params.yaml", {}).get("data", {})
            metrics = data.get("metrics", {}).get(f"data/{UC}/eval/metrics.json", {}).get("data", {})
            if params and metrics:
                variants[params["use_cases"][UC]["variant"]] = metrics["accuracy"]
    assert set(variants) == {"v1", "v2"}
    assert all(0 <= accuracy <= 1 for accuracy in variants.values())
