"""`llmops import-experiment` on a use case in the reference template's format, written by the tests."""

from __future__ import annotations

import json
import re

import yaml
from conftest import REPO, Project, StubLLM

FIXTURE = REPO / "tests" / "fixtures" / "template_experiment"


def test_import_maps_flows_data_evaluator_and_env_overlays(reproduced: Project, stub_llm: StubLLM) -> None:
    project = reproduced  # the existing use cases are up to date: only the imported one's stages may run
    result = project.sh("llmops", "import-experiment", str(FIXTURE))
    assert "as use case support_intent" in result.stdout
    not_mapped = re.findall(r"NOT MAPPED  (.*)", result.stdout)
    assert any("tickets_cloud" in line and "azureml:support_tickets:3" in line for line in not_mapped)
    assert any("connection 'aoai'" in line and "llm=azure_openai" in line for line in not_mapped)
    assert len(not_mapped) == 2

    config = yaml.safe_load((project.root / "conf/use_cases/support_intent.yaml").read_text())["support_intent"]
    assert config["data"] == {"inputs": {"message": "ticket_text"}, "label": "intent"}
    assert config["evaluate"]["mapping"] == {"expected": "data.intent", "predicted": "outputs.intent"}
    assert config["variants"]["v1"]["llm_node"] == "classify_intent"
    assert config["datasets"]["pr"].endswith("tickets_small.jsonl")
    assert config["datasets"]["dev"] == config["datasets"]["prod"]
    assert "${AOAI_API_KEY}" not in (project.root / "params.yaml").read_text()

    ran = set(project.repro())
    assert ran == {f"{stage}@support_intent" for stage in ("prepare", "run", "evaluate", "report")}
    requests = [r for r in stub_llm.requests() if "Classify the support ticket" in json.dumps(r["body"])]
    assert len(requests) == 8
    assert all(r["body"]["model"] == "gemma-3-270m" for r in requests)  # our connection, not the template's
    metrics = json.loads((project.root / "data/support_intent/eval/metrics.json").read_text())
    assert metrics["rows"] == 8 and 0 <= metrics["accuracy"] <= 1

    project.params("env=pr")
    project.repro("prepare@support_intent")
    prepared = (project.root / "data/support_intent/prepared.jsonl").read_text().splitlines()
    assert len(prepared) == 3  # the pr overlay's own dataset (the env subset of 12 keeps all 3)


def test_import_reports_bad_mappings_with_the_file_and_field(project: Project, tmp_path) -> None:
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(FIXTURE, broken)
    text = (broken / "experiment.yaml").read_text().replace('"${data.ticket_text}"', '"ticket_text"', 1)
    (broken / "experiment.yaml").write_text(text)
    result = project.sh("llmops", "import-experiment", str(broken), check=False)
    assert result.returncode == 1
    assert (
        "experiment.yaml: datasets 'tickets': mapping 'message: ticket_text' is not ${data.<column>}" in result.stderr
    )
    assert not (project.root / "conf/use_cases/support_intent.yaml").exists()


def test_an_experiment_name_that_is_no_use_case_name_stops_before_copying(project: Project, tmp_path) -> None:
    import shutil

    renamed = tmp_path / "renamed"
    shutil.copytree(FIXTURE, renamed)
    text = (renamed / "experiment.yaml").read_text()
    (renamed / "experiment.yaml").write_text(re.sub(r"(?m)^name: .*$", "name: 2024 support", text, count=1))
    result = project.sh("llmops", "import-experiment", str(renamed), check=False)
    assert result.returncode == 1
    assert "name '2024 support'" in result.stderr and "--name" in result.stderr
    assert (
        not list((project.root / "use_cases").glob("2024*")) and project.sh("git", "status", "--porcelain").stdout == ""
    )
