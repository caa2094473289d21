"""docs/onboarding.md, followed word for word on a flow the tests wrote, in a copy of the project."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from conftest import REPO, Project, StubLLM, ran_stages

FIXTURE = REPO / "tests" / "fixtures" / "byof" / "sentiment"


def doc_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (REPO / "docs" / "onboarding.md").read_text(), re.DOTALL)


def test_onboarding_doc_turns_a_flow_into_a_use_case(reproduced: Project) -> None:
    project = reproduced  # the existing use cases are up to date before onboarding
    outside = project.root.parent / "my-work"  # where a user keeps their flow before onboarding it
    shutil.copytree(FIXTURE, outside)
    setup, *steps = doc_blocks()
    assert "NAME=" in setup and len(steps) == 3
    variables = {"NAME": "sentiment", "FLOW": outside / "flow", "EVAL_FLOW": outside / "evaluate",
                 "DATASET": outside / "data.jsonl"}  # fmt: skip
    script = "set -euo pipefail\n" + "".join(f"{k}='{v}'\n" for k, v in variables.items()) + "\n".join(steps)
    result = subprocess.run(["bash", "-c", script], cwd=project.root, env=project.env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    ran = set(ran_stages(result.stdout + result.stderr))
    assert ran == {f"{stage}@sentiment" for stage in ("prepare", "run", "evaluate", "report")}
    assert (project.root / "use_cases/sentiment/data/dataset.jsonl.dvc").is_file()
    assert "dataset.jsonl" in (project.root / "use_cases/sentiment/data/.gitignore").read_text()
    metrics = json.loads((project.root / "data/sentiment/eval/metrics.json").read_text())
    assert metrics["rows"] == 8 and 0 <= metrics["accuracy"] <= 1
    outputs = (project.root / "data/sentiment/run/outputs/v1.jsonl").read_text().splitlines()
    assert len(outputs) == 8 and all(json.loads(line)["error"] is None for line in outputs)
    assert "sentiment" in (project.root / "data/sentiment/report/report.html").read_text()
    assert project.repro() == []  # and it stays up to date
    assert project.sh("dvc", "status").stdout.strip() == "Data and pipelines are up to date."


def test_add_use_case_refuses_missing_files_and_bad_names(project: Project) -> None:
    missing = project.sh("llmops", "add-use-case", "x", "--flow", "nowhere", "--eval-flow", "nowhere",
                         "--dataset", "none.jsonl", "--inputs", "a", "--label", "b", check=False)  # fmt: skip
    assert missing.returncode == 1 and "dataset: none.jsonl does not exist" in missing.stderr
    flows = "use_cases/web_classification/flows"
    bad = project.sh("llmops", "add-use-case", "Bad-Name", "--flow", f"{flows}/classify", "--eval-flow",
                     f"{flows}/evaluate", "--dataset", "use_cases/web_classification/data/pages.jsonl",
                     "--inputs", "url", "--label", "category", check=False)  # fmt: skip
    assert bad.returncode == 1 and "use case name 'Bad-Name'" in bad.stderr
    assert not (project.root / "conf/use_cases/x.yaml").exists()


KINDS = ("dag", "prompty", "class", "function", "maf")


@pytest.mark.pipeline
def test_new_scaffolds_use_cases_of_every_kind_that_run_unchanged(reproduced: Project, stub_llm: StubLLM) -> None:
    """One use case of each kind in one project (one `dvc repro`, not one per kind)."""
    project = reproduced  # the existing use cases are up to date: only the new ones' stages may run
    for kind in KINDS:
        created = project.sh("llmops", "new", f"faq_{kind}", "--kind", kind)
        assert f"scaffolded use case faq_{kind}" in created.stdout
    # The new use cases beside one existing one (and the documents' stages): nothing but the new stages runs.
    project.only("web_classification", *(f"faq_{kind}" for kind in KINDS))
    stages = ("prepare", "run", "evaluate", "report")
    assert set(project.repro()) == {f"{stage}@faq_{kind}" for kind in KINDS for stage in stages}
    for kind in KINDS:
        metrics = json.loads((project.root / f"data/faq_{kind}/eval/metrics.json").read_text())
        assert metrics["rows"] == 6 and metrics["run_errors"] == 0, kind
        cache = json.loads((project.root / f"data/faq_{kind}/run/operations.json").read_text())["cache"]
        assert cache["misses"] == 6, (kind, cache)  # each use case asked the LLM for its own rows
    # Each use case's own LLM cache: the same question reached the stub once per kind, in the scaffold's prompt.
    prompts = [r["body"]["prompt"] for r in stub_llm.requests() if "Q: Which animal says moo?" in r["body"]["prompt"]]
    assert len(prompts) == len(KINDS) and all(p.startswith("Answer each question in a few words.") for p in prompts)
    again = project.sh("llmops", "new", "faq_dag", "--kind", "prompty", check=False)  # the name is taken, any kind
    assert again.returncode == 1 and "use_cases/faq_dag exists already" in again.stderr
