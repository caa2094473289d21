"""`execution: azure`: the Run entity submitted to Azure ML and the calls made, against a fake promptflow-azure
PFClient (the SDK boundary); the run's details become the run stage's records."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import yaml
from promptflow._sdk._errors import RunNotFoundError

from stages.core import azure_execution, bake
from stages.core.project import load_params

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = yaml.safe_load((ROOT / "conf/execution/azure.yaml").read_text())
AZURE_LLM = {"name": "azure_openai", "type": "azure_openai", "api": "chat", "model": "gpt-4o-mini"}


class FakePFClient:
    """Records calls; a submitted run completes, and its details answer rows 0 and 2 (row 1 failed)."""

    def __init__(self, existing: str | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.submitted: list[Any] = []
        self.status = {existing: "Completed"} if existing else {}
        self.runs = SimpleNamespace(
            get=self._get, create_or_update=self._create, stream=self._stream, get_details=self._details
        )

    def _get(self, run: str) -> Any:
        self.calls.append(("runs.get", run))
        if run not in self.status:
            raise RunNotFoundError(f"run {run} not found")
        return SimpleNamespace(name=run, status=self.status[run])

    def _create(self, run: Any) -> Any:
        self.calls.append(("runs.create_or_update", run.name))
        self.submitted.append(run)
        self.status[run.name] = "Completed"
        return run

    def _stream(self, run: str) -> None:
        self.calls.append(("runs.stream", run))

    def _details(self, run: str, all_results: bool) -> pd.DataFrame:
        self.calls.append(("runs.get_details", (run, all_results)))
        frame = pd.DataFrame(
            {"inputs.url": ["a", "b", "c"], "outputs.category": ["Recipe", None, "News"],
             "outputs.valid": [True, None, True], "outputs.line_number": [0, 1, 2]}
        )  # fmt: skip
        return frame.set_index("outputs.line_number")


@pytest.fixture
def rows_file(tmp_path: Path) -> tuple[Path, list[dict]]:
    rows = [{"row_id": f"r{i}", "url": f"https://x/{i}", "text": f"t{i}", "category": "News"} for i in range(3)]
    path = tmp_path / "prepared.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def test_the_run_entity_and_the_calls(tmp_path: Path, rows_file: tuple) -> None:
    path, rows = rows_file
    use_case = load_params(ROOT)["use_cases"]["web_classification"]
    client = FakePFClient()
    records = azure_execution.run_variant(
        client, "web_classification", use_case, "v2", AZURE_LLM, SETTINGS, path, rows, tmp_path / "work"
    )
    flow = tmp_path / "work" / "v2"
    name = azure_execution.run_name("web_classification", "v2", bake.flow_sha256(flow), path)
    assert client.calls == [
        ("runs.get", name),
        ("runs.create_or_update", name),
        ("runs.stream", name),
        ("runs.get", name),
        ("runs.get_details", (name, True)),
    ]
    (run,) = client.submitted
    assert Path(run.flow) == flow and Path(run.data) == path
    assert run.column_mapping == {"url": "${data.url}", "text": "${data.text}"}
    assert run.connections == {"classify": {"connection": "aoai", "deployment_name": "gpt-4o-mini"}}
    assert run.display_name == "web_classification v2"
    assert run.tags == {"use_case": "web_classification", "variant": "v2", "llmops": "bulk-run"}
    assert run._resources == {"instance_type": "Standard_D2as_v5"} and run._runtime is None
    node = yaml.safe_load((flow / "flow.dag.yaml").read_text())["nodes"][0]
    assert (node["source"]["path"], node["api"]) == ("classify_v2.chat.jinja2", "chat")  # the chat prompt, baked
    assert records == [
        {"row_id": "r0", "outputs": {"category": "Recipe", "valid": True}, "error": None, "latency_s": 0.0},
        {"row_id": "r1", "outputs": None, "error": "line 1 failed in the Azure ML run (see the run's logs)",
         "latency_s": 0.0},
        {"row_id": "r2", "outputs": {"category": "News", "valid": True}, "error": None, "latency_s": 0.0},
    ]  # fmt: skip


def test_a_finished_run_of_the_same_work_is_not_submitted_again(tmp_path: Path, rows_file: tuple) -> None:
    path, rows = rows_file
    use_case = load_params(ROOT)["use_cases"]["web_classification"]
    first = FakePFClient()
    azure_execution.run_variant(first, "web_classification", use_case, "v1", AZURE_LLM, SETTINGS, path, rows, tmp_path)
    name = first.submitted[0].name
    again = FakePFClient(existing=name)
    azure_execution.run_variant(again, "web_classification", use_case, "v1", AZURE_LLM, SETTINGS, path, rows, tmp_path)
    assert [op for op, _ in again.calls] == ["runs.get", "runs.stream", "runs.get", "runs.get_details"]


def test_a_failed_run_raises_and_a_runtime_replaces_compute(tmp_path: Path, rows_file: tuple) -> None:
    path, _ = rows_file
    run = azure_execution.azure_run(
        "n", "uc", "v1", tmp_path, path, {"q": "question"}, {**SETTINGS, "runtime": "my-runtime"}, AZURE_LLM, None
    )
    assert run._runtime == "my-runtime" and run._resources is None and run.connections == {}
    client = FakePFClient()
    client.runs.stream = lambda run: client.status.update({run: "Failed"})
    with pytest.raises(azure_execution.AzureExecutionError, match="run n ended with status Failed"):
        azure_execution.submit(client, run)


def test_the_workspace_comes_from_named_environment_variables() -> None:
    env = {"AZURE_SUBSCRIPTION_ID": "s", "AZURE_RESOURCE_GROUP": "g", "AZURE_ML_WORKSPACE": "w"}
    assert azure_execution.workspace(SETTINGS, env) == {
        "subscription_id": "s", "resource_group_name": "g", "workspace_name": "w"
    }  # fmt: skip
    with pytest.raises(azure_execution.AzureExecutionError, match=r"execution\.workspace_env: .*AZURE_ML_WORKSPACE"):
        azure_execution.workspace(SETTINGS, {**env, "AZURE_ML_WORKSPACE": ""})
