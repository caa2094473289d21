"""`execution: azure`: the Run entity submitted to Azure ML and the calls made, against a fake promptflow-azure
PFClient (the SDK boundary); the run's details become the run stage's records."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import yaml
from promptflow._sdk._errors import RunNotFoundError

from stages.core.project import load_params
from stages.engine import bake
from stages.engine.promptflow import azure as azure_execution

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
        "n", "uc", "v1", tmp_path, path, {"q": "question"}, {**SETTINGS, "runtime": "my-runtime"}, AZURE_LLM
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


@pytest.fixture
def azure_project(tmp_path: Path, rows_file: tuple, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[dict]]:
    """A project whose params select execution: azure (conf/execution/azure.yaml) and variant v2 of
    web_classification, with the workspace named in the environment."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "use_cases/web_classification/flows", root / "use_cases/web_classification/flows")
    (root / ".dvc").mkdir()
    shutil.copytree(ROOT / "conf", root / "conf")
    params = load_params(ROOT)
    params["execution"] = SETTINGS
    params["llm"] = AZURE_LLM
    params["bulk"]["max_error_rate"] = 0.5
    params["use_cases"]["web_classification"]["variant"] = "v2"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for name, value in {
        "AZURE_SUBSCRIPTION_ID": "sub",
        "AZURE_RESOURCE_GROUP": "rg",
        "AZURE_ML_WORKSPACE": "ws",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(root)
    return root, rows_file[1]


def _run_args(root: Path, rows: Path) -> list[str]:
    return ["--use-case", "web_classification", "--rows", str(rows), "--out", str(root / "out"),
            "--summary", str(root / "summary.json"), "--operations", str(root / "operations.json"),
            "--cache", str(root / "cache")]  # fmt: skip


def test_the_run_stage_submits_each_variant_to_azure_ml(
    azure_project: tuple, rows_file: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m stages.run` with execution: azure: promptflow-azure's PFClient (faked: the SDK boundary) gets
    the workspace, each variant (baseline first) one run, and the stage writes a local run's records and summary."""
    from azure.identity import DefaultAzureCredential

    from stages import run

    root, _ = azure_project
    clients: list[tuple[dict, FakePFClient]] = []

    def pf_client(**kwargs: Any) -> FakePFClient:
        clients.append((kwargs, FakePFClient()))
        return clients[-1][1]

    monkeypatch.setitem(sys.modules, "promptflow.azure", SimpleNamespace(PFClient=pf_client))
    assert run.main(_run_args(root, rows_file[0])) == 0

    ((kwargs, client),) = clients
    assert isinstance(kwargs.pop("credential"), DefaultAzureCredential)
    assert kwargs == {"subscription_id": "sub", "resource_group_name": "rg", "workspace_name": "ws"}
    work = root / ".llmops/azure/web_classification"
    names = {v: azure_execution.run_name("web_classification", v, bake.flow_sha256(work / v), rows_file[0])
             for v in ("v1", "v2")}  # fmt: skip
    assert client.calls == [
        call for v in ("v1", "v2") for call in (
            ("runs.get", names[v]), ("runs.create_or_update", names[v]), ("runs.stream", names[v]),
            ("runs.get", names[v]), ("runs.get_details", (names[v], True)),
        )
    ]  # fmt: skip
    for submitted, variant in zip(client.submitted, ("v1", "v2"), strict=True):
        assert (Path(submitted.flow), Path(submitted.data)) == (work / variant, rows_file[0])
        assert submitted.column_mapping == {"url": "${data.url}", "text": "${data.text}"}
        assert submitted.connections == {"classify": {"connection": "aoai", "deployment_name": "gpt-4o-mini"}}
        assert submitted.tags == {"use_case": "web_classification", "variant": variant, "llmops": "bulk-run"}
    expected = [
        {"row_id": "r0", "outputs": {"category": "Recipe", "valid": True}, "error": None, "latency_s": 0.0},
        {"row_id": "r1", "outputs": None, "error": "line 1 failed in the Azure ML run (see the run's logs)",
         "latency_s": 0.0},
        {"row_id": "r2", "outputs": {"category": "News", "valid": True}, "error": None, "latency_s": 0.0},
    ]  # fmt: skip
    for variant in ("v1", "v2"):
        assert [json.loads(line) for line in (root / f"out/{variant}.jsonl").read_text().splitlines()] == expected
    summary = json.loads((root / "summary.json").read_text())
    assert (summary["variant"], summary["baseline"], summary["execution"]) == ("v2", "v1", "azure")
    assert (summary["rows"], summary["errors"], summary["invalid_answers"]) == (3, 1, 0)
    operations = json.loads((root / "operations.json").read_text())
    assert operations["cache"] == {"hits": 0, "misses": 0, "errors": 0}
    assert summary["tokens"] == {"prompt": 0, "completion": 0}
    assert operations["tokens"] == {"prompt_cached": 0, "completion_cached": 0}
    assert summary["latency_s"] == {"mean": 0.0, "p50": 0.0, "p95": 0.0}
    assert set(summary["variants"]) == {"v1"} and summary["variants"]["v1"]["errors"] == 1


def test_without_promptflow_azure_the_run_stage_names_the_extra(
    azure_project: tuple, rows_file: tuple, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from stages import run

    root, _ = azure_project
    monkeypatch.setitem(sys.modules, "promptflow.azure", None)  # what an environment without the package gives
    assert run.main(_run_args(root, rows_file[0])) == 1
    err = capsys.readouterr().err
    assert "params.yaml `execution.name`" in err and "pip install -e '.[azure]'" in err
    assert not (root / "out").exists() and not (root / "summary.json").exists()


def test_repeats_are_refused_by_name(
    azure_project: tuple, rows_file: tuple, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from stages import run

    root, _ = azure_project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["bulk"]["repeats"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setitem(sys.modules, "promptflow.azure", SimpleNamespace(PFClient=lambda **_: FakePFClient()))
    assert run.main(_run_args(root, rows_file[0])) == 1
    assert "bulk.repeats: 2 needs execution: local" in capsys.readouterr().err


def test_node_variants_are_baked_and_every_llm_node_runs_on_the_workspace_connection(tmp_path: Path) -> None:
    use_case = load_params(ROOT)["use_cases"]["chat_with_pdf"]
    path = tmp_path / "prepared.jsonl"
    path.write_text(json.dumps({"row_id": "r0", "question": "q"}) + "\n")
    client = FakePFClient()
    chosen = {"rewrite": ("variant_1", "use_cases.chat_with_pdf.node_variants.rewrite")}
    azure_execution.run_variant(client, "chat_with_pdf", use_case, "v1", AZURE_LLM, SETTINGS, path,
                                [{"row_id": "r0", "question": "q"}], tmp_path / "work", chosen)  # fmt: skip
    (run,) = client.submitted
    on_workspace = {"connection": "aoai", "deployment_name": "gpt-4o-mini"}
    assert run.connections == {"rewrite": on_workspace, "answer": on_workspace}
    nodes = {n["name"]: n for n in yaml.safe_load((tmp_path / "work/v1/flow.dag.yaml").read_text())["nodes"]}
    assert nodes["rewrite"]["source"]["path"] == "rewrite_hyde.chat.jinja2"
    bad = {"rewrite": ("variant_9", "use_cases.chat_with_pdf.node_variants.rewrite")}
    with pytest.raises(
        azure_execution.AzureExecutionError, match=r"^use_cases\.chat_with_pdf\.node_variants\.rewrite: .*'variant_9'"
    ):
        azure_execution.run_variant(client, "chat_with_pdf", use_case, "v1", AZURE_LLM, SETTINGS, path, [],
                                    tmp_path / "bad", bad)  # fmt: skip
