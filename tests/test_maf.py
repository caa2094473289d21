"""MAF workflows as a flow kind: the environment (uv, pinned), the worker protocol, the session the stages use,
against the stub LLM through a real LLM proxy. The workflows are in the exact shape of Microsoft's migrated
samples (tests/fixtures/maf)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, StubLLM

from stages import engine
from stages.engine import AggregationError, FlowError, FlowSession, LLMBinding, in_input_order
from stages.engine.maf import environment, is_maf_flow
from stages.llm import llm_proxy
from stages.llm.connections import NO_KEY, Connection

FIXTURES = REPO / "tests" / "fixtures" / "maf"


@pytest.fixture(scope="session")
def maf_python() -> Path:
    """The project's MAF environment (built once, as `make setup` does; reused while the pins are the same)."""
    return environment.ensure(REPO)


@pytest.fixture
def proxy(stub_llm: StubLLM, tmp_path: Path, maf_python: Path):
    connection = Connection("local", "openai", "completion", "gemma", stub_llm.base_url, NO_KEY)
    with llm_proxy.from_params(connection, {}, {"enabled": True}, tmp_path / "cache", row_of=engine.row_of_request,
                               bridge_chat=True) as proxy:  # fmt: skip
        yield proxy, proxy.connection(connection)


def session(flow: Path, connection: Connection | None = None, **params: object) -> FlowSession:
    """The flow as the run stage opens it: the variant's prompt and params in the binding."""
    prompt = params.pop("prompt", None)
    bindings = [LLMBinding(connection, prompt=prompt, params=params)] if connection else []
    return FlowSession(flow, *bindings, row_timeout_s=60)


def rows(n: int) -> list[tuple[str, dict[str, str]]]:
    return [(f"row {i}", {"url": f"https://example.org/{i}", "text": f"page {i}"}) for i in range(n)]


def test_a_sample_shaped_workflow_runs_its_rows_through_the_proxy(proxy, stub_llm: StubLLM) -> None:
    """Microsoft's shape (OpenAIChatClient from AZURE_OPENAI_*, the Responses API) runs unchanged: each request
    reaches the completion endpoint with the workflow's prompt, each row's usage is counted, rows run at once."""
    proxy_, connection = proxy
    stub_llm.script({"example.org/1\n": "App store page", "example.org/": "Movie"})
    stub_llm.faults(delay_s=0.3)
    results = in_input_order(session(FIXTURES / "classify", connection).run_rows(rows(8), concurrency=4),
                             [r for r, _ in rows(8)])  # fmt: skip
    assert [r.error for r in results] == [None] * 8
    assert results[1].outputs == {"category": "App", "raw": "App store page"}
    assert results[0].outputs == {"category": "Movie", "raw": "Movie"}
    sent = stub_llm.requests()
    assert len(sent) == 8 and {s["path"] for s in sent} == {"/v1/completions"}
    assert sent[0]["body"]["prompt"].startswith("URL: https://example.org/") and sent[0]["body"]["model"] == "gemma"
    assert max(s["in_flight"] for s in sent) > 1  # one async worker held several rows in flight
    assert proxy_.row_usage("row 3").misses == 1


def test_in_a_stage_the_worker_sends_its_llm_requests_over_the_protocol(proxy, stub_llm: StubLLM) -> None:
    """The stage's proxy answers the worker's requests through worker.py's `http` messages, not loopback HTTP:
    with nothing listening on the proxy's port any more, the rows are still answered, each counted for its row."""
    proxy_, connection = proxy
    proxy_._server.shutdown()
    proxy_._server.server_close()  # the port refuses connections now
    stub_llm.script({"example.org/": "News"})
    results = list(session(FIXTURES / "classify", connection).run_rows(rows(3), concurrency=3))
    assert [r.error for r in results] == [None] * 3 and {r.outputs["category"] for r in results} == {"News"}
    assert len(stub_llm.requests()) == 3 and proxy_.row_usage("row 2").misses == 1


def test_rows_fail_with_their_error_and_a_crashed_worker_fails_its_rows(proxy) -> None:
    _, connection = proxy
    data = [("ok", {"url": "u", "text": "t"}), ("bad", {"url": "u", "text": "raise"})]
    flow = session(FIXTURES / "classify", connection)
    results = {r.row_id: r for r in flow.run_rows(data)}
    assert results["ok"].error is None
    assert results["bad"].error == "ValueError: this row's executor failed"
    crash = [("c1", {"url": "u", "text": "crash the worker"}), ("c2", {"url": "u", "text": "t"})]
    crashed = {r.row_id: r for r in flow.run_rows(crash)}
    assert set(crashed) == {"c1", "c2"}
    for result in crashed.values():
        assert result.outputs is None
        assert result.error is not None and result.error.startswith("the MAF worker exited with code 3")


def test_aggregate_is_the_evaluation_pattern(proxy, stub_llm: StubLLM) -> None:
    _, connection = proxy
    stub_llm.script({"page 0": "App"})
    data = rows(3)
    flow = session(FIXTURES / "classify", connection)
    results = in_input_order(flow.run_rows(data), [r for r, _ in data])
    assert flow.aggregate(results, [inputs for _, inputs in data]) == {"rows": 3, "apps": pytest.approx(1 / 3)}


def test_variant_params_reach_create_workflow(proxy, stub_llm: StubLLM) -> None:
    """create_workflow(**params): the variant's prompt file and LLM params; a chat completion client on OPENAI_*."""
    _, connection = proxy
    stub_llm.script({"Answer tersely.": " Lisbon "})
    flow = session(FIXTURES / "chat_params", connection, prompt="answer_terse.txt", max_tokens=3, unused="dropped")
    (result,) = flow.run_rows([("q", {"question": "Capital of Portugal?"})])
    assert result.error is None and result.outputs == {"output": "Lisbon"}
    (sent,) = stub_llm.requests()
    assert sent["body"]["prompt"] == "Answer tersely.\nQ: Capital of Portugal?\nA:"
    assert sent["body"]["max_tokens"] == 3 and sent["body"]["stop"] == ["\n"]


def test_a_workflow_that_does_not_load_is_a_flow_error(maf_python: Path, tmp_path: Path) -> None:
    flow = tmp_path / "broken"
    flow.mkdir()
    (flow / "workflow.py").write_text("def build():\n    pass\n")
    assert is_maf_flow(flow)
    with pytest.raises(FlowError, match="defines no create_workflow"):
        session(flow)
    (flow / "workflow.py").write_text("import no_such_module_here\ndef create_workflow():\n    pass\n")
    with pytest.raises(FlowError, match="No module named 'no_such_module_here'"):
        session(flow)


def test_a_failing_aggregate_raises_aggregation_error(proxy, tmp_path: Path) -> None:
    _, connection = proxy
    flow = tmp_path / "classify"
    shutil.copytree(FIXTURES / "classify", flow)
    source = (
        (flow / "workflow.py")
        .read_text()
        .replace('return {"rows"', 'raise KeyError("groundtruth")\n    return {"rows"')
    )
    (flow / "workflow.py").write_text(source)
    data = rows(1)
    loaded = session(flow, connection)
    results = list(loaded.run_rows(data))
    with pytest.raises(AggregationError, match="KeyError: 'groundtruth'"):
        loaded.aggregate(results, [inputs for _, inputs in data])


def test_the_environment_is_rebuilt_when_the_pins_change(tmp_path: Path) -> None:
    pins = tmp_path / "requirements.txt"
    pins.write_text("# nothing pinned\n")
    python = environment.ensure(tmp_path, pins, say=False)
    assert python.is_file() and environment.is_current(environment.venv_dir(tmp_path), pins)
    marker = environment.venv_dir(tmp_path) / "marker"
    marker.touch()
    assert environment.ensure(tmp_path, pins, say=False) == python and marker.exists()  # reused
    pins.write_text("# nothing pinned, changed\n")
    assert not environment.is_current(environment.venv_dir(tmp_path), pins)
    environment.ensure(tmp_path, pins, say=False)
    assert not marker.exists()  # rebuilt


def test_make_setup_builds_the_environment_only_for_a_catalogue_with_maf(tmp_path: Path) -> None:
    from stages.engine.maf import uses_maf

    assert uses_maf(REPO)  # web_classification_maf, general_qa_maf
    (tmp_path / "params.yaml").write_text("use_cases:\n  x: {flow: flows/x, eval_flow: flows/e}\n")
    assert not uses_maf(tmp_path)
    (tmp_path / "flows" / "e").mkdir(parents=True)
    (tmp_path / "flows" / "e" / "workflow.py").write_text("def create_workflow():\n    pass\n")
    assert uses_maf(tmp_path)  # a MAF evaluation flow counts too


def test_a_flow_folders_requirements_go_into_the_maf_environment(tmp_path: Path, monkeypatch) -> None:
    """A MAF folder's own requirements.txt is installed into the MAF environment (the pins as constraints), once
    per file content; one uv cannot install is refused with the file and the exact command."""
    monkeypatch.setenv("UV_OFFLINE", "1")  # from uv's cache only: no network in tests
    pins = tmp_path / "pins.txt"
    pins.write_text("PyYAML==6.0.4\n")
    python = environment.ensure(tmp_path, pins, say=False)
    flow = tmp_path / "flow"
    flow.mkdir()
    (flow / "requirements.txt").write_text("pyyaml\n")
    environment.install_flow_requirements(tmp_path, flow, pins)
    check = subprocess.run([str(python), "-c", "import yaml; print(yaml.__version__)"], capture_output=True, text=True)
    assert check.stdout.strip() == "6.0.4"  # the pinned version, from the constraints
    stamp = environment.venv_dir(tmp_path) / environment.FLOW_STAMP
    assert len(stamp.read_text().split()) == 1
    environment.install_flow_requirements(tmp_path, flow, pins)  # the same file again: nothing to do
    assert len(stamp.read_text().split()) == 1
    (flow / "requirements.txt").write_text("no-such-package-for-llmops-tests==0.0.1\n")
    with pytest.raises(environment.EnvironmentError_) as refused:
        environment.install_flow_requirements(tmp_path, flow, pins)
    assert str(flow / "requirements.txt") in str(refused.value)
    assert f"uv pip install --quiet --python {python} -r {flow / 'requirements.txt'} -c {pins}" in str(refused.value)


def test_add_use_case_accepts_a_maf_folder() -> None:
    """`llmops add-use-case` checks a MAF folder like the other kinds: its declared inputs (workflow.py's INPUTS)
    against the spec, the evaluation mapping against its outputs."""
    from stages.usecases import catalogue

    spec = catalogue.UseCaseSpec(
        name="classify_maf", dataset="use_cases/web_classification/data/pages.jsonl",
        flow="use_cases/web_classification/flows/classify_maf", eval_flow="use_cases/web_classification/flows/evaluate",
        inputs=("url", "text"), label="category",
        mapping={"groundtruth": "data.category", "prediction": "outputs.category"},
        prediction="category", correct="correct", llm_node=None,
    )  # fmt: skip
    checked, _ = catalogue.check(REPO, spec)
    assert checked.flow == spec.flow
    with pytest.raises(catalogue.CatalogueError, match=r"'html' is not an input of .*classify_maf/workflow\.py"):
        catalogue.check(REPO, dataclasses.replace(spec, inputs=("url", "html")))
    with pytest.raises(catalogue.CatalogueError, match="has no output 'label'"):
        catalogue.check(REPO, dataclasses.replace(spec, mapping={"prediction": "outputs.label"}))


def test_a_worker_whose_stage_ends_while_its_rows_wait_for_the_llm_exits(maf_python: Path) -> None:
    """The stage killed while rows wait for answers over the pipe (kill-and-rerun): the worker's input ends, the
    waiting requests fail, the rows end and the worker exits (never an orphan waiting forever)."""
    from stages.engine.maf import adapter

    worker = subprocess.Popen([str(maf_python), str(adapter.WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert worker.stdin is not None and worker.stdout is not None
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "none", "OPENAI_MODEL": "m"}
    init = {"op": "init", "flow": str(FIXTURES / "chat_params"), "params": {}, "env": env, "concurrency": 4,
            "row_timeout_s": None, "proxy": "127.0.0.1:9"}  # fmt: skip
    worker.stdin.write(json.dumps(init) + "\n" + json.dumps({"op": "row", "id": "r", "inputs": {"q": "x"}}) + "\n")
    worker.stdin.flush()
    assert json.loads(worker.stdout.readline())["op"] == "ready"
    assert json.loads(worker.stdout.readline())["op"] == "http"  # the row's request, waiting for the stage
    worker.stdin.close()  # the stage is gone
    try:
        assert worker.wait(timeout=60) == 0
    finally:
        worker.kill()  # a worker that hangs is not left behind
    result = json.loads(worker.stdout.readline())
    assert result["op"] == "result" and "no LLM answer can come back" in result["error"]
