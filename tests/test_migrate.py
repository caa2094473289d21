"""`llmops migrate`: every DAG flow of the catalogue converts (or lists what it cannot), deterministically; the
catalogue's migrated use cases are what migrate writes today; a flow the tests wrote (prompt, llm, python nodes,
activate, aggregation) gives the same rows and metrics on MAF as on prompt flow, against the stub LLM."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO, StubLLM

from stages import engine
from stages.engine import migrate
from stages.engine.maf import environment, is_maf_flow
from stages.llm import llm_proxy
from stages.llm.connections import NO_KEY, Connection

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
DAG_FLOWS = sorted(
    {
        use_case[key]
        for use_case in PARAMS["use_cases"].values()
        for key in ("flow", "eval_flow")
        if (REPO / use_case[key] / "flow.dag.yaml").is_file()
    }
)
SCRATCH = REPO / ".llmops" / "test-migrate"  # inside the project: ruff formats with the project's settings


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    # One folder per xdist worker's test (tmp_path names repeat across workers), at the depth the flows' relative
    # paths to the project (../../../../stages/...) expect.
    folder = SCRATCH / f"{tmp_path.parent.name}-{tmp_path.name}"
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("flow", DAG_FLOWS)
def test_every_dag_flow_of_the_catalogue_migrates(flow: str, scratch: Path) -> None:
    source = REPO / flow
    dag = yaml.safe_load((source / "flow.dag.yaml").read_text())
    first = migrate.migrate_dag(source, scratch / "a", None, None, {}, REPO)
    again = migrate.migrate_dag(source, scratch / "b", None, None, {}, REPO)
    code = (scratch / "a" / "workflow.py").read_text()
    assert code == (scratch / "b" / "workflow.py").read_text()  # deterministic
    ast.parse(code)
    assert is_maf_flow(scratch / "a") and "def create_workflow(" in code
    names = {node["name"] for node in dag["nodes"]}
    listed = {where for where, _ in first.not_convertible}
    assert names <= set(first.converted) | listed, "a node is neither converted nor listed"
    assert first.not_convertible == again.not_convertible
    for node in dag["nodes"]:  # prompts and tool code copied verbatim
        path = (node.get("source") or {}).get("path")
        if path and (source / path).is_file():
            assert (scratch / "a" / path).read_bytes() == (source / path).read_bytes()
    report = (scratch / "a" / "MIGRATION.md").read_text()
    for where, reason in first.not_convertible:
        assert f"`{where}`: {reason}" in report


@pytest.mark.parametrize("name", ["web_classification", "general_qa"])
def test_the_catalogue_maf_use_cases_are_what_migrate_writes(name: str) -> None:
    """The shipped <name>_maf folders are the output of `llmops migrate <name>` (no hand edits) with today's
    runtime, and their config runs the migrated folder on the original's data, evaluation and variants."""
    config = yaml.safe_load((REPO / "conf" / "use_cases" / f"{name}.yaml").read_text())[name]
    shipped = REPO / PARAMS["use_cases"][f"{name}_maf"]["flow"]
    copy = SCRATCH / f"catalogue-{name}"
    shutil.rmtree(copy, ignore_errors=True)
    (copy / "use_cases").mkdir(parents=True)
    shutil.copytree(REPO / "use_cases" / name, copy / "use_cases" / name, ignore=shutil.ignore_patterns("*_maf"))
    try:
        migration, new_name, new_config = migrate.migrate_use_case(copy, name, config, "completion")
        written = migration.target
        assert new_name == f"{name}_maf"
        files = sorted(p.relative_to(written) for p in written.rglob("*") if p.is_file())
        assert files == sorted(
            p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )  # fmt: skip  (only the user's code: no runtime copy)
        assert "llmops_maf.py" not in {p.name for p in files}
        for file in files:
            assert (shipped / file).read_bytes() == (written / file).read_bytes(), file.name
        shipped_config = yaml.safe_load((REPO / "conf" / "use_cases" / f"{name}_maf.yaml").read_text())[new_name]
        assert shipped_config == new_config
        assert new_config["eval_flow"] == config["eval_flow"] and new_config["dataset"] == config["dataset"]
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def test_a_flex_flow_is_refused_with_the_reason(tmp_path: Path) -> None:
    flow = tmp_path / "flex"
    flow.mkdir()
    (flow / "flow.flex.yaml").write_text("entry: app:run\n")
    with pytest.raises(migrate.MigrationError, match="flex flow is Python code"):
        migrate.migrate_use_case(tmp_path, "x", {"flow": "flex", "variants": {}}, "completion")


def test_what_cannot_be_converted_is_listed_and_fails_its_rows(scratch: Path) -> None:
    flow = scratch / "src"
    shutil.copytree(REPO / "tests" / "fixtures" / "maf" / "dag_all", flow)
    dag = yaml.safe_load((flow / "flow.dag.yaml").read_text())
    dag["nodes"].append({"name": "lookup", "type": "python", "source": {"type": "package", "tool": "vector_db.search"},
                         "inputs": {"query": "${inputs.question}"}})  # fmt: skip
    dag["nodes"][1]["inputs"]["echo"] = True
    (flow / "flow.dag.yaml").write_text(yaml.safe_dump(dag))
    (flow / "helper.py").write_text("from promptflow.connections import CustomConnection\n")
    migration = migrate.migrate_dag(flow, scratch / "out", "answer", "answer.jinja2", {}, REPO)
    listed = dict(migration.not_convertible)
    assert listed["lookup"] == "a python node from package 'vector_db.search': only code nodes convert"
    assert listed["answer"] == "LLM parameter echo=True has no chat completions equivalent"
    assert "promptflow.connections import CustomConnection" in listed["helper.py"]
    code = (scratch / "out" / "workflow.py").read_text()
    assert "NOT CONVERTED: node `lookup`" in code and "raise NotImplementedError(" in code


def test_migrated_flow_gives_prompt_flows_rows_and_metrics(stub_llm: StubLLM, scratch: Path, tmp_path: Path) -> None:
    """prompt, llm, python nodes, activate (both branches) and aggregation: the same outputs per row and the same
    logged metrics on both engines; the LLM requests carry the same prompt and params."""
    stub_llm.script({"Q: capital of France?": " Paris\n", "Q: largest planet?": " Jupiter\n"})
    source = REPO / "tests" / "fixtures" / "maf" / "dag_all"
    migration = migrate.migrate_dag(source, scratch / "maf", "answer", "answer.jinja2", {"max_tokens": 4}, REPO)
    assert migration.converted == ["shape", "answer", "fallback", "pick", "score"]
    assert migration.not_convertible == []
    rows = [
        ("r1", {"question": "capital of France?", "mode": "llm", "expected": "Paris"}),
        ("r2", {"question": "largest planet?", "mode": "llm", "expected": "Jupiter"}),
        ("r3", {"question": "meaning of life?", "mode": "skip", "expected": "42"}),
        ("r4", {"question": "nothing", "mode": "neither", "expected": ""}),
    ]
    ids = [row_id for row_id, _ in rows]
    connection = Connection("local", "openai", "completion", "gemma", stub_llm.base_url, NO_KEY)
    environment.ensure(REPO)
    with llm_proxy.from_params(connection, {}, {"enabled": False}, tmp_path / "cache", bridge_chat=True) as proxy:
        proxied = proxy.connection(connection)
        binding = engine.LLMBinding(proxied, node="answer", params={"max_tokens": 4})
        pf = engine.FlowSession(source, binding)
        pf_results = engine.in_input_order(pf.run_rows(rows), ids)
        pf_metrics = pf.aggregate(pf_results, [inputs for _, inputs in rows])
        pf_requests = stub_llm.requests()
        maf = engine.FlowSession(scratch / "maf", engine.LLMBinding(proxied, params={"max_tokens": 4}))
        maf_results = engine.in_input_order(maf.run_rows(rows, concurrency=2), ids)
        maf_metrics = maf.aggregate(maf_results, [inputs for _, inputs in rows])
    assert [r.error for r in maf_results[:3]] == [r.error for r in pf_results[:3]] == [None] * 3
    assert [r.outputs for r in maf_results] == [r.outputs for r in pf_results]
    assert maf_results[0].outputs == {"answer": "Paris", "source": "llm", "shaped": "Q: capital of France?\nA:"}
    assert maf_results[2].outputs["answer"] == "no answer to meaning of life?"  # the fallback branch
    # Both branches bypassed: pick is bypassed too, and an output that reads a property of it fails the row.
    assert "Invalid property 'answer' when accessing the node 'pick'" in pf_results[3].error
    assert "Invalid property 'answer' when accessing the node 'pick'" in maf_results[3].error
    assert maf_metrics == pf_metrics == {"llm_share": 0.6667, "rows": 3, "fallbacks": 1}  # rows that succeeded
    maf_requests = stub_llm.requests()[len(pf_requests) :]
    assert len(pf_requests) == len(maf_requests) == 2
    by_prompt = sorted(maf_requests, key=lambda r: r["body"]["prompt"])
    for pf_request, maf_request in zip(sorted(pf_requests, key=lambda r: r["body"]["prompt"]), by_prompt, strict=True):
        for key in ("prompt", "max_tokens", "temperature", "stop", "model"):
            assert maf_request["body"][key] == pf_request["body"][key], key


def test_the_project_modules_a_flow_imports_are_vendored_when_the_maf_environment_can_run_them(
    stub_llm: StubLLM, scratch: Path, tmp_path: Path
) -> None:
    """math_coding/solve imports stages.core.sandbox (standard library only): copied into the migrated folder, the
    flow converts completely and its rows run in the MAF environment. general_qa/evaluate's stages.metrics.text
    needs packages the MAF environment does not have: listed with them, nothing copied."""
    migration = migrate.migrate_dag(REPO / "use_cases/math_coding/flows/solve", scratch / "solve", "write_code",
                                    "solve_v1.jinja2", {"max_tokens": 96}, REPO)  # fmt: skip
    assert migration.not_convertible == []
    assert (scratch / "solve/stages/core/sandbox.py").read_bytes() == (REPO / "stages/core/sandbox.py").read_bytes()
    stub_llm.script({"sheep": "```python\nprint(4 * 35 - 26)\n```"})
    connection = Connection("local", "openai", "completion", "gemma", stub_llm.base_url, NO_KEY)
    environment.ensure(REPO)
    with llm_proxy.from_params(connection, {}, {"enabled": False}, tmp_path / "cache", bridge_chat=True) as proxy:
        session = engine.FlowSession(scratch / "solve", engine.LLMBinding(proxy.connection(connection)))
        (result,) = session.run_rows([("r1", {"question": "4 fields with 35 sheep each, 26 sold: sheep left?"})])
    assert result.error is None and (result.outputs["answer"], result.outputs["valid"]) == (114, True), result
    evaluate = migrate.migrate_dag(REPO / "use_cases/general_qa/flows/evaluate", scratch / "eval", None, None, {},
                                   REPO)  # fmt: skip
    assert ("stages", "stages/metrics/text.py (the flow's code imports it) needs rouge_score, sacrebleu, which the "
            "MAF environment does not have") in evaluate.not_convertible  # fmt: skip
    assert not (scratch / "eval" / "stages").exists()


def test_migrate_eval_also_converts_the_evaluation_flow(scratch: Path) -> None:
    """`llmops migrate --eval`: the DAG evaluation flow becomes <eval>_maf (its aggregation: `aggregate`), the new
    use case evaluates with it, and its rows and metrics are prompt flow's."""
    name = "web_classification"
    config = yaml.safe_load((REPO / "conf" / "use_cases" / f"{name}.yaml").read_text())[name]
    shutil.copytree(REPO / "use_cases" / name, scratch / "use_cases" / name, ignore=shutil.ignore_patterns("*_maf"))
    migration, _, new_config = migrate.migrate_use_case(scratch, name, config, "completion", evaluation=True)
    evaluation = migration.evaluation
    assert evaluation is not None and evaluation.not_convertible == []
    assert evaluation.converted == ["grade", "aggregate"]
    assert new_config["eval_flow"] == "use_cases/web_classification/flows/evaluate_maf"
    rows = [(f"r{i}", {"groundtruth": truth, "prediction": guess})
            for i, (truth, guess) in enumerate([("News", "News"), ("App", "Movie"), ("Recipe", "recipe")])]  # fmt: skip
    environment.ensure(REPO)
    results = {}
    for kind, flow in (("pf", REPO / config["eval_flow"]), ("maf", evaluation.target)):
        session = engine.FlowSession(flow)
        ran = engine.in_input_order(session.run_rows(rows), [r for r, _ in rows])
        results[kind] = ([r.outputs for r in ran], session.aggregate(ran, [inputs for _, inputs in rows]))
    assert results["maf"] == results["pf"] and results["pf"][1]
