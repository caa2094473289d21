"""MAF on Azure ML: `execution: azure` submits a MAF use case as an Azure ML parallel job (Microsoft's maf-prs-job
pattern), against a fake MLClient (the SDK boundary) asserting the exact job; the package's PRS entry script runs
for real in the MAF environment against the stub LLM. The azureml deploy target's MAF deployment is in
tests/test_deploy_azureml.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from azure.core.exceptions import ResourceNotFoundError
from conftest import REPO, StubLLM

from stages.core.project import load_params
from stages.engine.maf import azure as maf_azure
from stages.engine.maf import environment

SETTINGS = yaml.safe_load((REPO / "conf/execution/azure.yaml").read_text())
AZURE_LLM = {"name": "azure_openai", "type": "azure_openai", "api": "chat", "model": "gpt-4o-mini",
             "base_url": "https://aoai.example.com"}  # fmt: skip
USE_CASE = "web_classification_maf"


class FakeMLClient:
    """Records the calls of azure.ai.ml's MLClient.jobs; a submitted job completes, and its flow_outputs answer
    rows 0 and 2 (row 1 has no line: it failed on Azure ML)."""

    def __init__(self, **workspace: Any) -> None:
        self.workspace = workspace
        self.calls: list[tuple[str, Any]] = []
        self.submitted: list[Any] = []
        self.status: dict[str, str] = {}
        self.jobs = SimpleNamespace(get=self._get, create_or_update=self._create, stream=self._stream,
                                    download=self._download)  # fmt: skip

    def _get(self, name: str) -> Any:
        self.calls.append(("jobs.get", name))
        if name not in self.status:
            raise ResourceNotFoundError(f"job {name} not found")
        return SimpleNamespace(name=name, status=self.status[name])

    def _create(self, job: Any, experiment_name: str) -> Any:
        self.calls.append(("jobs.create_or_update", (job.name, experiment_name)))
        self.submitted.append(job)
        self.status[job.name] = "Completed"
        return job

    def _stream(self, name: str) -> None:
        self.calls.append(("jobs.stream", name))

    def _download(self, name: str, output_name: str, download_path: str) -> None:
        self.calls.append(("jobs.download", (name, output_name)))
        folder = Path(download_path) / "named-outputs" / output_name
        folder.mkdir(parents=True)
        lines = [{"line_number": 0, "output": {"row_id": "r0", "outputs": {"category": "News"}, "error": None,
                                               "latency_s": 0.5}},
                 {"line_number": 2, "output": {"row_id": "r2", "outputs": None, "error": "ValueError: bad page",
                                               "latency_s": 0.1}}]  # fmt: skip
        (folder / "flow_outputs").write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture
def maf_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A project whose params select execution: azure and the MAF use case web_classification_maf (variant v2),
    with the workspace named in the environment; its prepared rows."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "use_cases/web_classification/flows", root / "use_cases/web_classification/flows")
    (root / ".dvc").mkdir()
    shutil.copytree(REPO / "conf", root / "conf")
    params = load_params(REPO)
    params.update(execution=SETTINGS, llm=AZURE_LLM)
    params["bulk"]["max_error_rate"] = 0.7
    params["use_cases"][USE_CASE]["variant"] = "v2"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    rows = [{"row_id": f"r{i}", "url": f"https://x/{i}", "text": f"t{i}", "category": "News"} for i in range(3)]
    (root / "prepared.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    workspace = {"AZURE_SUBSCRIPTION_ID": "sub", "AZURE_RESOURCE_GROUP": "rg", "AZURE_ML_WORKSPACE": "ws"}
    for name, value in workspace.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(root)
    return root, root / "prepared.jsonl"


def test_execution_azure_runs_a_maf_use_case_as_a_parallel_job(
    maf_project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.entities import PipelineJob
    from azure.identity import DefaultAzureCredential

    from stages import run

    root, rows = maf_project
    clients: list[FakeMLClient] = []

    def ml_client(credential: Any, **workspace: Any) -> FakeMLClient:
        assert isinstance(credential, DefaultAzureCredential)
        clients.append(FakeMLClient(**workspace))
        return clients[-1]

    monkeypatch.setattr("azure.ai.ml.MLClient", ml_client)
    args = ["--use-case", USE_CASE, "--rows", str(rows), "--out", str(root / "out"), "--summary",
            str(root / "summary.json"), "--operations", str(root / "ops.json"), "--cache", str(root / "c")]  # fmt: skip
    assert run.main(args) == 0

    (client,) = clients
    assert client.workspace == {"subscription_id": "sub", "resource_group_name": "rg", "workspace_name": "ws"}
    work = root / ".llmops/azure" / USE_CASE
    names = {v: maf_azure.job_name(USE_CASE, v, work / v, rows) for v in ("v1", "v2")}
    assert client.calls == [
        call for v in ("v1", "v2") for call in (
            ("jobs.get", names[v]), ("jobs.create_or_update", (names[v], "llmops-maf")), ("jobs.stream", names[v]),
            ("jobs.get", names[v]), ("jobs.download", (names[v], "flow_outputs")),
        )
    ]  # fmt: skip
    job = client.submitted[1]  # v2
    assert isinstance(job, PipelineJob) and job.name == names["v2"] and job.settings.default_compute == "serverless"
    assert job.tags == {"use_case": USE_CASE, "variant": "v2", "llmops": "bulk-run", "engine": "maf"}
    assert job.inputs["rows"].path == str(rows) and job.inputs["rows"]._data.type == "uri_file"
    (step,) = job.jobs.values()
    assert step.type == "parallel" and step.input_data == "${{inputs.data}}"
    assert (step.mini_batch_size, step.max_concurrency_per_instance, step.error_threshold) == (10, 2, -1)
    assert step.resources.instance_type == "Standard_D2as_v5" and step.resources.instance_count == 1
    assert step.environment_variables == {
        "OPENAI_MODEL": "gpt-4o-mini",
        "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-mini",
        "OPENAI_API_VERSION": "2024-10-21",
        "AZURE_OPENAI_API_VERSION": "2024-10-21",
        "OPENAI_BASE_URL": "https://aoai.example.com",
        "AZURE_OPENAI_ENDPOINT": "https://aoai.example.com",
    }  # fmt: skip  (no key: secrets are never written)
    task = step.task
    assert (Path(task.code), task.entry_script) == (work / "v2", "prs_entry.py")
    assert task.program_arguments == (
        "--amlbi_pf_enabled True --amlbi_pf_run_mode component --amlbi_file_format jsonl --amlbi_mini_batch_rows 10"
    )
    assert task.append_row_to == "${{outputs.flow_outputs}}" and task.environment.image == maf_azure.IMAGE
    conda = yaml.safe_load((work / "v2/conda.yml").read_text())
    pins = conda["dependencies"][2]["pip"]
    assert "agent-framework-core==1.23.0" in pins and "azureml-core>=1.59.0" in pins
    settings = json.loads((work / "v2/llmops_run.json").read_text())
    assert settings["params"] == {"prompt": "classify_v2.chat.jinja2", "temperature": 0, "max_tokens": 4}
    assert settings["inputs"] == {"url": "url", "text": "text"}
    assert (work / "v2/flow/workflow.py").read_bytes() == (
        REPO / "use_cases/web_classification/flows/classify_maf/workflow.py"
    ).read_bytes()
    records = [json.loads(line) for line in (root / "out/v2.jsonl").read_text().splitlines()]
    assert records == [
        {"row_id": "r0", "outputs": {"category": "News"}, "error": None, "latency_s": 0.5},
        {"row_id": "r1", "outputs": None, "error": "line 1 failed in the Azure ML job (see the job's logs)",
         "latency_s": 0.0},
        {"row_id": "r2", "outputs": None, "error": "ValueError: bad page", "latency_s": 0.1},
    ]  # fmt: skip
    summary = json.loads((root / "summary.json").read_text())
    assert (summary["execution"], summary["rows"], summary["errors"]) == ("azure", 3, 2)


def test_the_packaged_entry_script_runs_rows_in_the_maf_environment(tmp_path: Path, stub_llm: StubLLM) -> None:
    """The PRS entry (init / run(mini_batch, context) / shutdown) and score.py (init / run(raw_data)) of a package,
    run as Azure ML would run them, in the MAF environment against the stub LLM: one JSON line per row, its line
    number from the context; the workflow's outputs per request."""
    python = environment.ensure(REPO)
    code = maf_azure.package(REPO / "tests/fixtures/maf/chat_params", {"prompt": "answer_terse.txt", "max_tokens": 3},
                             {"question": "q"}, tmp_path / "pkg", maf_azure.PRS_PACKAGES)  # fmt: skip
    stub_llm.script({"Capital of Portugal?": "Lisbon"})
    driver = textwrap.dedent("""
        import json, sys, types
        sys.path.insert(0, sys.argv[1])
        import prs_entry
        prs_entry.init()
        batch = [{"row_id": "a", "q": "Capital of Portugal?"}, {"row_id": "b", "q": "Capital of Spain?"}]
        lines = prs_entry.run(batch, types.SimpleNamespace(global_row_index_lower_bound=20))
        prs_entry.shutdown()
        import score
        score.init()
        print(json.dumps({"prs": lines, "score": score.run(json.dumps({"question": "Capital of Portugal?"}))}))
    """)  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "OPENAI_BASE_URL": stub_llm.base_url, "OPENAI_API_KEY": "none",
           "OPENAI_MODEL": "stub", "TMPDIR": tempfile.gettempdir()}  # fmt: skip
    done = subprocess.run([str(python), "-c", driver, str(code)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answered = json.loads(done.stdout.strip().splitlines()[-1])
    lines = [json.loads(line) for line in answered["prs"]]
    assert [(line["line_number"], line["output"]["row_id"], line["output"]["error"]) for line in lines] == [
        (20, "a", None), (21, "b", None)
    ]  # fmt: skip
    assert lines[0]["output"]["outputs"] == {"output": "Lisbon"}
    assert answered["score"] == {"output": "Lisbon"}  # score.py: a request is the flow's inputs
    assert maf_azure.records(tmp_path / "none", [{"row_id": "a"}])[0]["error"].startswith("line 0 failed")
