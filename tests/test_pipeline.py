"""The stage graph end to end on the stub LLM: outputs, incrementality, variants and experiments."""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import json
import socket

import pytest
import yaml
from conftest import CODE_STAGES, Project, Reproduced, StubLLM, ran_stages

UC = "web_classification"
QA = "general_qa"
NER = "named_entity_recognition"
CHAT = "chat"
CHAT_ROWS = 46  # each also calls three judges: relevance, coherence, fluency
RAG = "chat_with_pdf"
RAG_ROWS = 49  # a rewrite, an answer and a judgement each
MATH = "math_coding"
CODE = "code_generation"
UC_MAF, QA_MAF = "web_classification_maf", "general_qa_maf"  # `llmops migrate` of UC and QA (MAF workflows)
DOCS_STAGES = {"docs_extract", "docs_chunk", "docs_index"}  # chat_with_pdf's DataOps: documents -> vector index


def stages(*use_cases: str, only: tuple[str, ...] = ("prepare", "run", "evaluate", "report")) -> set[str]:
    return {f"{stage}@{use_case}" for use_case in use_cases for stage in only}


ALL_STAGES = stages(UC, NER, QA, CHAT, RAG, MATH, CODE, UC_MAF, QA_MAF) | DOCS_STAGES | CODE_STAGES


def test_repro_produces_outputs_metrics_and_report(reproduced_build: Reproduced, reproduced: Project) -> None:
    # The session's project was reproduced from a fresh clone with conftest.reproduced_rules: chat's judges score
    # relevance 3, except an unreadable verdict for the stub's "banana" answers; coherence 4; fluency 5 for
    # "banana", else 2. `reproduced` is a copy of it.
    project = reproduced
    assert set(reproduced_build.ran) == ALL_STAGES
    data = project.root / "data" / UC
    rows = [json.loads(line) for line in (data / "run" / "outputs" / "v1.jsonl").read_text().splitlines()]
    prepared = (data / "prepared.jsonl").read_text().splitlines()
    assert len(rows) == len(prepared) == 72
    assert all(row["error"] is None and row["latency_s"] >= 0 for row in rows)
    # The stub answers some prompts with a word that is not a label: kept raw, mapped to Other, never dropped.
    others = [row for row in rows if row["outputs"]["category"] == "Other"]
    assert others and all(row["outputs"]["raw"].strip() == "banana" and not row["outputs"]["valid"] for row in others)
    # Every request the flows made, counted by the LLM cache; the stub saw only the misses, each once (chat's
    # fluency judge sees only the answer, and the stub's answers repeat: repeats are answered by the cache).
    made = missed = 0
    for use_case in (UC, NER, QA, CHAT, RAG, MATH, CODE, UC_MAF, QA_MAF):
        for counted in ("run/operations.json", "eval/operations.json"):
            if cache := json.loads((project.root / "data" / use_case / counted).read_text()).get("cache"):
                made, missed = made + cache["hits"] + cache["misses"], missed + cache["misses"]
    assert made == 72 + 48 + 48 + 4 * CHAT_ROWS + 3 * RAG_ROWS + 48 + 44 + 72 + 48  # the MAF use cases' too
    sent = [json.dumps(r["body"], sort_keys=True) for r in reproduced_build.requests]
    # Each request once, except that a migrated MAF use case may ask exactly what its original asks (its own cache).
    assert len(sent) == missed and max(collections.Counter(sent).values()) <= 2

    metrics = json.loads((data / "eval" / "metrics.json").read_text())
    labels = [json.loads(line)["category"] for line in prepared]
    predictions = {row["row_id"]: row["outputs"]["category"] for row in rows}
    expected = sum(json.loads(p)["category"] == predictions[json.loads(p)["row_id"]] for p in prepared) / 72
    assert metrics["accuracy"] == round(expected, 4)
    assert set(metrics["precision"]) == set(metrics["recall"]) == set(labels)

    for use_case in (UC, NER, QA, CHAT, RAG, MATH, CODE):  # the declared headline agrees with the eval flow's own
        logged = json.loads((project.root / "data" / use_case / "eval" / "metrics.json").read_text())
        for name, result in logged["headline"].items():
            own = logged.get(name)
            own = own.get("mean") if isinstance(own, dict) else own
            assert own is None or result["value"] == pytest.approx(own, abs=1e-4), (use_case, name)
            if result["value"] is None:  # no row had a value (e.g. every judge answer unreadable), nor a logged mean
                assert own is None and result["rows"] == 0, (use_case, name)
            else:
                assert result["ci_low"] <= result["value"] <= result["ci_high"], (use_case, name)

    shown = json.loads(project.sh("dvc", "metrics", "show", "--json").stdout)
    assert any("accuracy" in json.dumps(entry) for entry in shown.values())
    plots = json.loads(project.sh("dvc", "plots", "show", "--json").stdout)
    assert "errors" not in plots  # every use case's plot data loads into its template (tests/test_plots.py draws them)
    use_cases = (UC, NER, QA, CHAT, RAG, MATH, CODE, UC_MAF, QA_MAF)
    names = {f"data/{use_case}/report/plots/{name}.json" for use_case in use_cases for name in ("metrics", "latency")}
    assert set(plots["data"]) == names
    assert all(plot[0]["content"]["data"]["values"] for plot in plots["data"].values())
    html = (data / "report" / "report.html").read_text()
    assert "<svg" in html and f"{metrics['accuracy']:.1%}" in html
    assert (data / "report" / "report.csv").read_text().count("\n") == 73

    qa = project.root / "data" / QA
    answers = [json.loads(line) for line in (qa / "run" / "outputs" / "v1.jsonl").read_text().splitlines()]
    assert len(answers) == 48 and all(isinstance(row["outputs"]["output"], str) for row in answers)
    qa_metrics = json.loads((qa / "eval" / "metrics.json").read_text())
    assert qa_metrics["rows"] == 48 and 0 <= qa_metrics["exact_match"] <= qa_metrics["contains_match"] <= 1

    ner = json.loads((project.root / "data" / NER / "eval" / "metrics.json").read_text())
    # The stub never answers in the "type: name" format: no entities, so recall is 0 and nothing is invented.
    assert ner["rows"] == 48 and ner["exact_recall"] == 0.0 and ner["exact_precision"] == 0.0

    chat = project.root / "data" / CHAT
    replies = [json.loads(line) for line in (chat / "run" / "outputs" / "v1.jsonl").read_text().splitlines()]
    assert len(replies) == CHAT_ROWS and all(row["error"] is None for row in replies)
    prompts = [r["body"]["prompt"] for r in reproduced_build.requests]
    follow_up = "User: What is the capital of Italy?\nAssistant: Rome is the capital of Italy.\nUser: What river"
    assert sum(follow_up in prompt for prompt in prompts) == 1  # the prior turn reached the flow's prompt
    chat_metrics = json.loads((chat / "eval" / "metrics.json").read_text())
    bananas = sum(row["outputs"]["answer"] == "banana" for row in replies)
    assert 0 < bananas < CHAT_ROWS and chat_metrics["rows"] == CHAT_ROWS
    fluency = round((5 * bananas + 2 * (CHAT_ROWS - bananas)) / CHAT_ROWS, 4)
    assert {name: chat_metrics[name] for name in ("relevance", "coherence", "fluency")} == {
        "relevance": {"scored": CHAT_ROWS - bananas, "errors": bananas, "mean": 3.0},
        "coherence": {"scored": CHAT_ROWS, "errors": 0, "mean": 4.0},
        "fluency": {"scored": CHAT_ROWS, "errors": 0, "mean": fluency},
    }
    assert 0 <= chat_metrics["similarity"] <= 1
    chat_html = (chat / "report" / "report.html").read_text()
    assert '<div class="k">relevance</div><div class="v">3.00 / 5</div>' in chat_html
    assert chat_metrics["headline"]["relevance"]["value"] == 3.0  # the declared headline agrees with the flow
    assert (f'<div class="k">relevance errors</div><div class="v">{bananas}</div>'
            f'<div class="n">{CHAT_ROWS - bananas} scored, {bananas} unparseable</div>') in chat_html  # fmt: skip
    assert f'<div class="k">fluency</div><div class="v">{fluency:.2f} / 5</div>' in chat_html


def test_prompt_flow_stays_offline_and_quiet_under_the_project(reproduced_build: Reproduced) -> None:
    project = reproduced_build  # read only: what the whole catalogue's `dvc repro` left behind
    home = project.root.parent / "home"
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


def test_dvc_stays_offline_under_the_project(project: Project) -> None:
    """No usage report to analytics.dvc.org and no update check from any `dvc` command: `.dvc/config` turns both
    off, so they stay off without an environment variable (none of the ways to turn them off is set here)."""
    env = {key: value for key, value in project.env.items() if key not in {"DVC_NO_ANALYTICS", "DVC_TEST", "CI"}}
    unset = dataclasses.replace(project, env=env)
    status = unset.sh("dvc", "status", "-v")
    log = status.stdout + status.stderr  # DVC logs to stdout
    assert "Analytics is disabled." in log and "Trying to spawn" not in log
    version = unset.sh("dvc", "version", "-v")
    log = version.stdout + version.stderr
    assert "Check for update is disabled." in log and "Trying to spawn" not in log


@pytest.mark.pipeline
def test_only_what_changed_reruns(reproduced: Project) -> None:
    project = reproduced  # every stage is up to date (tests/conftest.py reproduced it once for the session)
    project.only(UC, QA)  # the smallest graph that shows it: two use cases (and the documents' stages)
    assert project.repro() == []  # nothing changed, and narrowing the catalogue reruns nothing either

    # A prompt edit reruns that use case's run/evaluate/report, and nothing of any other use case (a prompty here;
    # a Jinja prompt of a DAG flow in tests/test_llm_cache.py, which also counts the LLM requests it makes).
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

    # A module edit reruns the code stage of each kind that imports it (its manifest of the modules' hashes
    # changes), then that kind's stages: a module only the reports import reruns every report, and nothing else.
    charts = project.root / "stages" / "results" / "charts.py"
    charts.write_text(charts.read_text() + "\n# a comment\n")
    assert set(project.repro()) == {"code_report"} | stages(UC, QA, RAG, only=("report",))
    manifest = json.loads((project.root / "data" / "_code" / "report.json").read_text())
    assert manifest["stage"] == "code_report"
    assert manifest["files"]["stages/results/charts.py"] == hashlib.md5(charts.read_bytes()).hexdigest()


@pytest.mark.pipeline
def test_a_chunking_param_and_a_report_param_rerun_only_what_reads_them(reproduced: Project) -> None:
    project = reproduced
    # A chunking param rebuilds chunks and index; the index lives in the flow folder, so chat_with_pdf reruns.
    rag = project.root / "conf" / "use_cases" / f"{RAG}.yaml"
    rag.write_text(rag.read_text().replace("words: 80", "words: 60"))
    project.only(UC)  # web_classification beside chat_with_pdf: the smallest graph that shows both params
    assert set(project.repro()) == {"docs_chunk", "docs_index"} | stages(RAG, only=("run", "evaluate", "report"))

    config = project.root / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("chart_dpi: 110", "chart_dpi: 90"))
    project.only(UC)
    assert set(project.repro()) == stages(UC, RAG, only=("report",))  # every report of the graph, nothing else


def test_env_pr_runs_a_small_deterministic_subset(project: Project) -> None:
    project.params("env=pr")
    project.repro(f"prepare@{UC}", f"prepare@{QA}")
    first = (project.root / "data" / UC / "prepared.jsonl").read_text()
    assert len(first.splitlines()) == 12
    assert len((project.root / "data" / QA / "prepared.jsonl").read_text().splitlines()) == 12
    (project.root / "data" / UC / "prepared.jsonl").unlink()
    project.sh("dvc", "repro", "--force", f"prepare@{UC}")
    assert (project.root / "data" / UC / "prepared.jsonl").read_text() == first


@pytest.mark.pipeline
def test_exp_run_variant_v2_and_exp_show(reproduced: Project, reproduced_build: Reproduced, stub_llm: StubLLM) -> None:
    project = reproduced  # v1 of every use case reproduced and committed
    # Two use cases show the experiment (one with LLM judges); every other use case's v2 runs in the test below.
    project.only(UC, CHAT)
    project.commit("two use cases")
    targets = (f"report@{UC}", f"report@{CHAT}")
    result = project.sh("dvc", "exp", "run", "-S", "variant=v2", *targets)
    assert "Running stage 'prepare" not in result.stdout  # only stages whose params changed
    assert set(ran_stages(result.stdout)) == stages(UC, CHAT, only=("run", "evaluate", "report"))
    asked = [json.dumps(r["body"], sort_keys=True) for r in stub_llm.requests()]
    v1_asked = [json.dumps(r["body"], sort_keys=True) for r in reproduced_build.requests]
    assert not set(asked) & set(v1_asked)  # a request v1 made is answered by the LLM cache
    v2_prompts = [r["body"]["prompt"] for r in stub_llm.requests()]
    # The baseline v1 runs again beside v2, all of it answered by the LLM cache. v2 asks for every row; its
    # judges only for the answers that v1 did not give too.
    judges = ("Rate how relevant", "Rate how coherent", "Rate how fluent")
    judged = sum(p.startswith(judges) for p in v2_prompts)
    assert 0 < judged <= 3 * CHAT_ROWS
    # The stub saw exactly what the experiment's LLM caches missed (the baseline's rows all hits).
    operations = [json.loads((project.root / "data" / uc / stage / "operations.json").read_text())
                  for uc in (UC, CHAT) for stage in ("run", "eval")]  # fmt: skip
    misses = sum(counts.get("cache", {}).get("misses", 0) for counts in operations)  # no judge: no eval cache
    assert len(v2_prompts) == misses == len(set(asked))
    assert sum(p.startswith("Web page categories:") for p in v2_prompts) == 72
    assert sum(p.startswith("A terse assistant") for p in v2_prompts) == CHAT_ROWS == len(v2_prompts) - judged - 72

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

    # The v2 experiment's report compares v2 with its baseline v1, row by row, with a verdict per headline metric.
    metrics = json.loads((project.root / "data" / UC / "eval" / "metrics.json").read_text())
    assert metrics["variant"] == "v2" and metrics["baseline"] == "v1" and set(metrics["variants"]) == {"v1"}
    accuracy = metrics["headline"]["accuracy"]
    assert accuracy["value"] == metrics["accuracy"] and accuracy["test"] == "McNemar exact"
    assert accuracy["delta"] == round(metrics["accuracy"] - metrics["variants"]["v1"]["accuracy"], 4)
    assert accuracy["verdict"] in ("better", "worse", "no significant difference")
    rows = list(csv.DictReader((project.root / "data" / UC / "report" / "report.csv").open()))
    flips = {row["flip"] for row in rows}
    assert len(rows) == 72 and flips <= {"fixed", "broken", "changed", "same", "error"}
    assert all(row["flip"] != "same" or row["v1.prediction"] == row["v2.prediction"] for row in rows)
    html = (project.root / "data" / UC / "report" / "report.html").read_text()
    assert "vs v1:" in html and 'data-show="fixed broken"' in html

    # `llmops compare` reads both revisions through DVC and builds the same page: the commit (v1) vs the experiment.
    experiment = project.sh("dvc", "exp", "list", "--name-only").stdout.split()[0]
    compared = project.sh("llmops", "compare", "HEAD", experiment, "--use-case", UC, "--out", "cmp")
    assert f"{experiment} (v2): accuracy {metrics['accuracy']:.1%}" in compared.stdout
    assert f"vs HEAD (v1) ({accuracy['verdict']})" in compared.stdout
    page = (project.root / "cmp" / f"{UC}.html").read_text()
    assert "HEAD (v1).prediction" in page and f"{experiment} (v2).prediction" in page
    bad = project.sh("llmops", "compare", "HEAD", "no-such-rev", check=False)
    assert bad.returncode == 1 and "no-such-rev: neither an experiment nor a git revision" in bad.stderr


@pytest.mark.pipeline
def test_variant_v2_of_every_other_use_case_asks_its_own_prompts(reproduced: Project, stub_llm: StubLLM) -> None:
    """`variant=v2` reaches every use case's flow (the experiment above shows two): each run stage runs v2 beside its
    baseline v1, whose every request the LLM cache answers."""
    project, use_cases = reproduced, (NER, QA, RAG, MATH, CODE)
    project.only(*use_cases, overrides=("variant=v2",))
    assert set(project.repro("--single-item", *(f"run@{uc}" for uc in use_cases))) == stages(*use_cases, only=("run",))
    prompts = [r["body"]["prompt"] for r in stub_llm.requests()]
    misses = [json.loads((project.root / "data" / uc / "run" / "operations.json").read_text())["cache"]["misses"]
              for uc in use_cases]  # fmt: skip
    assert len(prompts) == sum(misses) == 48 + 48 + RAG_ROWS + 48 + 44  # no evaluation ran: no judge was asked
    assert sum(p.startswith("Find the person, location, organization names") for p in prompts) == 48
    assert sum(p.startswith("Question:") for p in prompts) == 48
    assert sum(p.startswith("# Each math question") for p in prompts) == 48
    assert sum(p.startswith('def larger(a, b):\n    """') for p in prompts) == 44
    for uc in use_cases:
        summary = json.loads((project.root / "data" / uc / "run" / "summary.json").read_text())
        assert summary["variant"] == "v2" and summary["errors"] == 0, (uc, summary)
