"""`llmops import-experiment` on a use case in the reference template's layout and schema, written by the tests
(tests/fixtures/template_experiment: experiment.yaml with two evaluators, an empty dev overlay, a pr overlay with
an empty `evaluators:`, a `staging` overlay with its own dataset and mappings), and the checks it shares with
`llmops add-use-case`."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import CODE_STAGES, REPO, Project, StubLLM

from stages.usecases import catalogue, eval_outputs, flow_facts, import_plan, import_spec, importer

FIXTURE = REPO / "tests" / "fixtures" / "template_experiment"
JSON_FIXTURE = REPO / "tests" / "fixtures" / "template_json"  # math_coding's shape
STANDARD_TEXTS = [json.loads(line)["ticket_text"] for line in (FIXTURE / "data/tickets.jsonl").read_text().splitlines()]


def test_import_runs_the_standard_dataset_evaluated_on_the_evaluators_columns(
    project: Project, stub_llm: StubLLM
) -> None:
    stub_llm.rules.write_text(json.dumps({"Classify the support ticket summary": "Billing"}))
    result = project.sh("llmops", "import-experiment", str(FIXTURE), "--llm-node", "classify_intent")
    out = result.stdout
    assert "as use cases support_intent, support_intent_length_eval" in out
    # every dataset of every evaluator is a use case, each choice said
    assert "evaluated by 'intent_eval' (flows/evaluation) on 'tickets_train_eval'" in out
    assert "(6 rows, tickets.jsonl + eval_data.jsonl)" in out
    assert "correct: match (flows/evaluation/flow.dag.yaml declares it bool)" in out  # not the first output
    assert "correct: length (flows/length/flow.dag.yaml declares it int); headline metric length" in out
    assert "data.lists: chat_history (input history of" in out
    assert "mappings.limit: the literal 5 becomes the column const_limit" in out
    assert "evaluation input unit is not mapped: every row is evaluated on its default" in out
    assert "[pr] experiment.pr.yaml: names no evaluator 'intent_eval'" in out
    assert "[staging] experiment.staging.yaml: inputs {'message': 'subject'" in out
    assert "no conf/env/staging.yaml" in out
    not_mapped = re.findall(r"NOT MAPPED  (.*)", out)
    assert len(not_mapped) == 3
    assert any("dataset 'tickets_cloud' is evaluated by no evaluator" in line for line in not_mapped)
    assert any("connection 'aoai'" in line and "-S llm=" in line for line in not_mapped)
    assert any(line.startswith("experiment.yaml: runtime") for line in not_mapped)
    staged = sorted(project.sh("git", "diff", "--cached", "--name-only").stdout.split())
    data = "use_cases/support_intent/data"
    assert staged == [f"{data}/.gitignore", *(f"{data}/{name}.jsonl.dvc" for name in
                      ("tickets_small", "tickets_small_2", "tickets_train", "tickets_train_eval"))]  # fmt: skip

    text = (project.root / "conf/use_cases/support_intent.yaml").read_text()
    assert "imported by `llmops import-experiment` from template_experiment/experiment.yaml" in text
    config = yaml.safe_load(text)["support_intent"]
    assert config["variants"]["v1"]["llm_node"] == "classify_intent"
    assert config["data"]["lists"] == ["chat_history"] and config["data"]["label"] == "intent"
    assert config["evaluate"]["mapping"] == {"expected": "data.intent", "predicted": "outputs.intent"}
    assert config["metrics"] == {"accuracy": "match"} and config["report"]["correct"] == "match"

    ran = set(project.repro("report@support_intent", "report@support_intent_length_eval"))
    assert ran == CODE_STAGES | {f"{stage}@{uc}" for stage in ("prepare", "run", "evaluate", "report")
                                 for uc in ("support_intent", "support_intent_length_eval")}  # fmt: skip
    requests = [json.dumps(r["body"]) for r in stub_llm.requests()]
    summaries = [r for r in requests if "Summarize the support ticket" in r]
    assert all(any(text in r for r in summaries) for text in STANDARD_TEXTS)  # the standard dataset's rows
    assert not any("EVAL COPY" in r for r in requests)  # never the evaluator dataset's copy of the column
    assert any("Classify the support ticket summary" in r for r in requests)  # both LLM nodes on our LLM
    assert all('"model": "gemma-3-270m"' in r for r in summaries)
    metrics = json.loads((project.root / "data/support_intent/eval/metrics.json").read_text())
    assert metrics["rows"] == 6 and metrics["headline"]["accuracy"]["value"] == pytest.approx(2 / 6, abs=1e-4)
    lengths = json.loads((project.root / "data/support_intent_length_eval/eval/metrics.json").read_text())
    assert lengths["headline"]["length"]["value"] == 5  # min(len("billing"), the literal limit 5)

    # any env name: the staging overlay's dataset and mappings, once the project has that env
    env = (project.root / "conf/env/dev.yaml").read_text().replace("name: dev", "name: staging")
    (project.root / "conf/env/staging.yaml").write_text(env)
    project.params("env=staging")
    project.repro("report@support_intent")
    prepared = [json.loads(line) for line in (project.root / "data/support_intent/prepared.jsonl").open()]
    assert [row["subject"] for row in prepared] == ["Charged twice", "Parcel missing"]
    assert any("Ticket: Parcel missing" in json.dumps(r["body"]) for r in stub_llm.requests())


def _copy(tmp_path: Path, name: str = "exp") -> Path:
    folder = tmp_path / name
    shutil.copytree(FIXTURE, folder)
    return folder


def _clean(project: Project) -> None:
    assert project.sh("git", "status", "--porcelain").stdout == ""
    assert not (project.root / "use_cases/support_intent").exists()
    assert not list((project.root / "use_cases").glob(".import-*"))


def test_a_failed_import_leaves_the_project_as_it_was_and_a_rerun_works(project: Project, tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "experiment.empty.yaml").write_text("evaluators:\ndatasets:\n")  # empty blocks: no TypeError
    experiment = folder / "experiment.yaml"
    good = experiment.read_text()
    experiment.write_text(good.replace("${run.outputs.intent}", "${run.outputs.nope}", 1))
    failed = project.sh("llmops", "import-experiment", str(folder), check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "experiment.yaml: evaluators[0].datasets[0].mappings.predicted: '${run.outputs.nope}'" in failed.stderr
    assert "has no output 'nope' (outputs: intent)" in failed.stderr
    _clean(project)

    experiment.write_text(good)
    failed = project.sh("llmops", "import-experiment", str(folder), "--llm-node", "tidy", check=False)
    assert failed.returncode == 1
    assert ("--llm-node tidy: flows/experiment/flow.dag.yaml has no `type: llm` node 'tidy' (its LLM nodes: "
            "summarize, classify_intent)") in failed.stderr  # fmt: skip
    _clean(project)

    tickets = folder / "data/tickets.jsonl"
    rows = tickets.read_text()
    tickets.write_text(rows + rows.splitlines()[0] + "\n")  # fails after the folder is in place: the row checks
    failed = project.sh("llmops", "import-experiment", str(folder), check=False)
    assert failed.returncode == 1
    assert ("use_cases/support_intent/data/tickets_train.jsonl:7: duplicate inputs ('ticket_text', "
            "'chat_history') (same as line 1)") in failed.stderr  # fmt: skip
    _clean(project)
    tickets.write_bytes(rows.encode().replace(b"charged twice", b"charged \xe9 twice", 1))  # read as prepare reads rows
    failed = project.sh("llmops", "import-experiment", str(folder), check=False)
    assert failed.returncode == 1
    assert re.search(r"data/tickets\.jsonl:\d+: not valid UTF-8 \(byte 0xe9 at column \d+\)", failed.stderr)
    _clean(project)
    tickets.write_text("\ufeff" + rows)  # a leading BOM is accepted
    config = project.root / "conf" / "config.yaml"
    registry = config.read_text()
    config.write_text(registry.replace("- use_cases:", "- use_case_list:", 1))  # fails registering the first config
    failed = project.sh("llmops", "import-experiment", str(folder), check=False)
    assert failed.returncode == 1 and "no `- use_cases: [...]` line" in failed.stderr
    assert not list((project.root / "conf" / "use_cases").glob("support_intent*"))  # its config went too
    config.write_text(registry)
    _clean(project)

    done = project.sh("llmops", "import-experiment", str(folder))
    assert "chose llm_node summarize of" in done.stdout and "every LLM node runs on the project's LLM" in done.stdout
    assert "[empty] experiment.empty.yaml: no dataset for evaluator 'intent_eval': runs the base's" in done.stdout
    again = project.sh("llmops", "import-experiment", str(folder), check=False)
    assert again.returncode == 1 and "use_cases/support_intent exists already (choose another --name)" in again.stderr


def test_an_experiment_that_maps_no_flow_input_stops_before_copying(project: Project, tmp_path: Path) -> None:
    folder = _copy(tmp_path)  # the template's chat_with_pdf: its one mapping names no input, every input has a default
    flow = folder / "flows/experiment/flow.dag.yaml"
    flow.write_text(flow.read_text().replace("  message:\n    type: string\n", "  message:\n    type: string\n"
                                             "    default: hello\n", 1))  # fmt: skip
    experiment = folder / "experiment.yaml"
    text = experiment.read_text().replace('    message: "${data.ticket_text}"\n    history: "${data.chat_history}"\n',
                                          '    math_question: "${data.ticket_text}"\n', 1)  # fmt: skip
    experiment.write_text(text)
    result = project.sh("llmops", "import-experiment", str(folder), check=False)
    assert result.returncode == 1
    assert "maps no input of flows/experiment/flow.dag.yaml (inputs: message, history), and each has a default" in (
        result.stderr
    )
    _clean(project)


def test_an_experiment_that_maps_no_flow_input_reads_the_columns_named_as_inputs(
    project: Project, tmp_path: Path
) -> None:
    """The template's chat_with_pdf maps `math_question`, no input of its flow, whose inputs all have defaults:
    prompt flow runs every row on the defaults. The rows have columns named as the inputs: those are read, and said."""
    folder = _copy(tmp_path)
    for env in ("staging", "pr"):
        (folder / f"experiment.{env}.yaml").unlink()
    flow = folder / "flows/experiment/flow.dag.yaml"
    text = flow.read_text().replace("  message:\n    type: string\n", "  ticket_text:\n    type: string\n"
                                    "    default: hello\n", 1)  # fmt: skip
    flow.write_text(text.replace("${inputs.message}", "${inputs.ticket_text}"))
    experiment = folder / "experiment.yaml"
    mapped = '    message: "${data.ticket_text}"\n    history: "${data.chat_history}"\n'
    experiment.write_text(experiment.read_text().replace(mapped, '    math_question: "${data.ticket_text}"\n', 1))
    out = project.sh("llmops", "import-experiment", str(folder)).stdout
    assert (
        "NOT MAPPED experiment.yaml: datasets[0].mappings.math_question: flows/experiment/flow.dag.yaml has no input"
        in (out)
    )
    assert ("warning: experiment.yaml: datasets[0].mappings: maps no input of flows/experiment/flow.dag.yaml (inputs: "
            "ticket_text, history); prompt flow would run every row on the flow's defaults. The inputs the rows have a "
            "column of the same name for read it, unlike prompt flow (ticket_text: '${data.ticket_text}')"
            ) in out  # fmt: skip
    assert "flow input history is not mapped: every row runs on its default" in out
    assert "flow input ticket_text is not mapped" not in out  # it reads its column: said once, not contradicted
    config = yaml.safe_load((project.root / "conf/use_cases/support_intent.yaml").read_text())["support_intent"]
    assert config["data"]["inputs"] == ["ticket_text"]


def test_an_object_input_with_a_column_of_its_name_runs_on_its_default_and_says_why(
    project: Project, tmp_path: Path
) -> None:
    """The template's chat_with_pdf 1-line dataset has a `config` column (an object: its prompt and completion token
    limits) beside its question; the flow's `config` input (type: object) runs on its default, and the import says
    why: the run stage passes no object to a flow yet."""
    folder = _copy(tmp_path)
    for env in ("staging", "pr"):
        (folder / f"experiment.{env}.yaml").unlink()
    flow = folder / "flows/experiment/flow.dag.yaml"
    text = flow.read_text().replace(
        "  message:\n    type: string\n",
        "  ticket_text:\n    type: string\n"
        "    default: hello\n  config:\n    type: object\n    default: {limit: 3000}\n",
        1,
    )
    flow.write_text(text.replace("${inputs.message}", "${inputs.ticket_text}"))
    experiment = folder / "experiment.yaml"
    mapped = '    message: "${data.ticket_text}"\n    history: "${data.chat_history}"\n'
    experiment.write_text(experiment.read_text().replace(mapped, '    math_question: "${data.ticket_text}"\n', 1))
    tickets = folder / "data/tickets.jsonl"
    rows = [json.loads(line) for line in tickets.read_text().splitlines() if line.strip()]
    tickets.write_text("".join(json.dumps({**row, "config": {"limit": 2000}}) + "\n" for row in rows))
    out = project.sh("llmops", "import-experiment", str(folder)).stdout
    assert ("flow input config is not mapped: every row runs on its default (the rows' column config is an object, "
            "and the run stage passes no object to a flow yet") in out  # fmt: skip
    config = yaml.safe_load((project.root / "conf/use_cases/support_intent.yaml").read_text())["support_intent"]
    assert config["data"]["inputs"] == ["ticket_text"]


def test_an_experiment_name_that_is_no_use_case_name_stops_before_copying(project: Project, tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    text = (folder / "experiment.yaml").read_text()
    (folder / "experiment.yaml").write_text(re.sub(r"(?m)^name: .*$", "name: 2024 support", text, count=1))
    result = project.sh("llmops", "import-experiment", str(folder), check=False)
    assert result.returncode == 1
    assert "name '2024 support'" in result.stderr and "--name" in result.stderr
    assert not list((project.root / "use_cases").glob("2024*"))
    assert project.sh("git", "status", "--porcelain").stdout == ""


def test_an_experiment_without_evaluators_runs_with_the_operational_evaluation_and_says_how_to_add_one(
    project: Project, stub_llm: StubLLM, tmp_path: Path
) -> None:
    """Missing `evaluators` is allowed (the template's parser allows it): the use case is evaluated by the built-in
    operational evaluation (no ground truth: is there an answer?), in every env, and the output says how to add an
    evaluator."""
    stub_llm.rules.write_text(json.dumps({"Classify the support ticket summary": "Billing"}))
    folder = _copy(tmp_path)
    text = (folder / "experiment.yaml").read_text()
    (folder / "experiment.yaml").write_text(text[: text.index("evaluators:")])
    (folder / "experiment.staging.yaml").unlink()
    out = project.sh("llmops", "import-experiment", str(folder), "--llm-node", "classify_intent").stdout
    assert "as use case support_intent;" in out
    assert ("experiment.yaml: datasets[0]: runs the standard flow on 'tickets_train', evaluated by no evaluator "
            "(stages/templates/operational): data/tickets_train.jsonl (6 rows, tickets.jsonl)") in out  # fmt: skip
    assert "headline metric answered: the share of rows answered" in out
    assert "label: priority (shown as the expected value in the report" in out  # the column no flow input reads
    todo = next(line for line in out.splitlines() if "evaluators: none" in line)
    assert "to do  experiment.yaml: evaluators: none, so support_intent is evaluated operationally only" in todo
    assert ("copy your evaluation flow to use_cases/support_intent/flows/<evaluation flow>, then in "
            "conf/use_cases/support_intent.yaml set eval_flow: use_cases/support_intent/flows/<evaluation flow>, "
            "evaluate.mapping:") in todo  # fmt: skip
    assert "`dvc repro report@support_intent`" in todo and "Or add `evaluators:` to experiment.yaml" in todo
    config = yaml.safe_load((project.root / "conf/use_cases/support_intent.yaml").read_text())["support_intent"]
    assert config["eval_flow"] == "stages/templates/operational"  # used where it is, not copied
    assert not (project.root / "use_cases/support_intent/flows/operational").exists()
    assert config["evaluate"]["mapping"] == {"prediction": "outputs.intent"}
    assert config["metrics"] == {"answered": "answered"} and config["report"]["correct"] == "answered"
    assert config["data"]["label"] == "priority"

    project.params("env=pr")  # the pr overlay (an empty `evaluators:`, its own dataset): evaluated the same way
    ran = set(project.repro("report@support_intent"))
    assert ran == CODE_STAGES | {f"{stage}@support_intent" for stage in ("prepare", "run", "evaluate", "report")}
    metrics = json.loads((project.root / "data/support_intent/eval/metrics.json").read_text())
    assert metrics["headline"]["answered"]["value"] == 1.0
    assert metrics["answered_rate"] == 1.0 and metrics["rows"] == 6  # logged by its aggregation
    spec = importlib.util.spec_from_file_location("answered", project.root / "stages/templates/operational/answered.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    answers = ("x", " ", None, [], {}, ["a"], 0)  # a blank text, None and an empty list or object are no answer
    assert [module.answered(a) for a in answers] == [True, False, False, False, False, True, True]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${data.answer}", ("data", "answer")),
        ("${run.outputs.category}", ("outputs", "category")),
        ("${target.output}", ("outputs", "output")),  # prompt flow's evaluate() syntax
        ("${run.inputs.url}", ("inputs", "url")),
        ("ticket_text", ("literal", "ticket_text")),  # a mapping value need not be ${...}
        (5, ("literal", 5)),
    ],
)
def test_mapping_values(value: object, expected: tuple) -> None:
    assert import_plan.parse_reference(value, "k") == expected


def test_an_unknown_reference_names_the_key() -> None:
    with pytest.raises(importer.ExperimentImportError, match=r"^evaluators\[0\]\.datasets\[0\]\.mappings\.x: "):
        import_plan.parse_reference("${flow.x}", "evaluators[0].datasets[0].mappings.x")


def _facts(outputs: dict | None) -> flow_facts.FlowFacts:
    return flow_facts.FlowFacts(Path("e"), flow_facts.engine.FlowKind.DAG, Path("e/flow.dag.yaml"), {}, outputs)


@pytest.mark.parametrize(
    ("outputs", "correct", "metrics"),
    [
        ({"explanation": "string", "match": "bool"}, "match", {"accuracy": "match"}),  # a bool over the first
        ({"label": "string", "score": "double"}, "score", {"score": "score"}),  # a number: its mean, its name
        ({"grade": "string"}, "grade", {"grade": "grade"}),  # stock grades: mapped by the evaluate stage
        ({"match_cnt": "object"}, "match_cnt", {"accuracy": "match_cnt"}),  # a dict: by its first number
        (None, None, {}),
    ],
)
def test_correct_is_chosen_from_the_declared_types(outputs: dict | None, correct: str | None, metrics: dict) -> None:
    chosen, chosen_metrics, why = eval_outputs.choose_correct(_facts(outputs), "e/flow.dag.yaml")
    assert (chosen, chosen_metrics) == (correct, metrics)
    assert "e/flow.dag.yaml" in why


def test_flex_entries_are_read_from_their_signature(tmp_path: Path) -> None:
    flow = tmp_path / "chat"
    flow.mkdir()
    (flow / "flow.flex.yaml").write_text("entry: flow:ChatFlow\n")
    (flow / "flow.py").write_text(
        "class ChatFlow:\n    def __init__(self, model_config, max_total_token=4096):\n        pass\n\n"
        "    def __call__(self, question: str, chat_history: list = None) -> str:\n        return question\n"
    )
    facts = flow_facts.read(flow)
    assert facts.inputs == {"question": ("string", True), "chat_history": ("list", False)}
    assert facts.outputs == {"output": "string"} and facts.model_config is True
    (flow / "flow.flex.yaml").write_text("entry: code:write\n")
    (flow / "code.py").write_text(
        "import os\nfrom typing import TypedDict\n\nclass Result(TypedDict):\n    output: str\n    score: float\n\n"
        "def write(text: str) -> Result:\n    key = os.environ['OPENAI_API_KEY']\n"
    )
    facts = flow_facts.read(flow)
    assert facts.outputs == {"output": "string", "score": "double"}
    assert facts.model_config is False and facts.sdk_callers == ("code.py",)


def _spec(**changes: object) -> catalogue.UseCaseSpec:
    base = {"name": "x", "dataset": "data.jsonl", "flow": "flows/experiment", "eval_flow": "flows/evaluation",
            "inputs": {"message": "ticket_text"}, "label": "intent",
            "mapping": {"expected": "data.intent", "predicted": "outputs.intent"}, "prediction": "intent",
            "correct": "match"}  # fmt: skip
    return catalogue.UseCaseSpec(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for flow in ("experiment", "evaluation"):
        shutil.copytree(FIXTURE / "flows" / flow, tmp_path / "flows" / flow)
    rows = [{"ticket_text": "a", "intent": "billing", "chat_history": []}]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"llm_node": "tidy"}, "--llm-node tidy: flows/experiment/flow.dag.yaml has no `type: llm` node 'tidy'"),
        ({"inputs": {"message": "subject"}}, "--inputs: column 'subject' is not in data.jsonl (columns: chat_history"),
        ({"inputs": {"text": "ticket_text"}}, "--inputs: 'text' is not an input of flows/experiment/flow.dag.yaml"),
        (
            {"inputs": {"history": "chat_history"}},
            "--inputs: flows/experiment/flow.dag.yaml input 'message' has no default and is not given",
        ),
        (
            {"mapping": {"expected": "data.intent", "predicted": "outputs.nope"}},
            "--map predicted=outputs.nope: flows/experiment/flow.dag.yaml has no output 'nope' (outputs: intent)",
        ),
        (
            {"mapping": {"expected": "data.intent", "predicted": "outputs.intent", "extra": "data.intent"}},
            "--map extra: not an input of flows/evaluation/flow.dag.yaml (inputs: expected, predicted)",
        ),
        (
            {"correct": "correct"},
            "--correct correct: flows/evaluation/flow.dag.yaml has no output 'correct' (outputs: explanation, match)",
        ),
    ],
)
def test_add_and_import_checks_name_the_file_and_key(root: Path, changes: dict, error: str) -> None:
    with pytest.raises(catalogue.CatalogueError) as caught:
        catalogue.check(root, _spec(**changes))
    assert str(caught.value).startswith(error)


def test_checks_choose_the_llm_node_and_list_inputs_and_say_so(root: Path) -> None:
    spec, notes = catalogue.check(root, _spec(inputs={"message": "ticket_text", "history": "chat_history"}))
    assert spec.llm_node == "summarize" and spec.lists == ("chat_history",)
    assert any(n.startswith("chose llm_node summarize of flows/experiment/flow.dag.yaml's LLM nodes") for n in notes)
    dag = root / "flows/experiment/flow.dag.yaml"
    no_llm = yaml.safe_load(dag.read_text())
    no_llm["nodes"] = [n for n in no_llm["nodes"] if n["type"] != "llm"]
    dag.write_text(yaml.safe_dump(no_llm))
    _, notes = catalogue.check(root, _spec())  # a flow without an LLM still runs; the LLM settings miss it
    assert any("no `type: llm` node and no python node calling an LLM SDK: the flow never asks an LLM" in n
               for n in notes)  # fmt: skip
    (root / "flows/experiment/tidy.py").write_text("from openai import OpenAI\n")
    _, notes = catalogue.check(root, _spec())
    assert any(
        "tidy (tidy.py) build(s) an LLM client of its own: the run points OPENAI_API_KEY / OPENAI_BASE_URL"
        " and AZURE_OPENAI_API_KEY / AZURE_OPENAI_ENDPOINT at the project's LLM (conf/llm) through the LLM proxy" in n
        for n in notes
    )  # as flows/standard/basic's hello.py: its requests are cached and counted


def test_python_nodes_connection_inputs_get_the_run_connection(tmp_path: Path) -> None:
    from stages import engine
    from stages.llm import connections

    connection = connections.Connection(name="local", type="openai", base_url="http://127.0.0.1:1/v1", api_key="k",
                                        model="m", api="completion")  # fmt: skip
    dag = {"nodes": [
        {"name": "setup_env", "type": "python", "inputs": {"connection": "aoai", "config": "${inputs.config}"}},
        {"name": "qna", "type": "python", "inputs": {"my_connection": "${setup_env.output}"}},  # a reference
    ]}  # fmt: skip
    assert engine.python_connections(dag, connection) == {"setup_env": {"connection": connection}}
    # the template's chat_with_pdf setup_env takes Union[AzureOpenAIConnection, OpenAIConnection] and builds an Azure
    # client from an Azure connection (an OpenAI one gets OpenAI(api_version=...), a TypeError): it gets Azure's
    folder = tmp_path / "flow"
    folder.mkdir()
    dag["nodes"][0]["source"] = {"type": "code", "path": "setup_env.py"}
    tool = "@tool\ndef setup_env(connection: {}, config: dict):\n    pass\n"
    (folder / "setup_env.py").write_text(tool.format("Union[AzureOpenAIConnection, OpenAIConnection]"))
    [[bound]] = [inputs.values() for inputs in engine.python_connections(dag, connection, folder).values()]
    assert (bound.type, bound.api_version, bound.base_url, bound.api_key) == ("azure_openai", "2024-10-21",
                                                                              connection.base_url, "k")  # fmt: skip
    for annotation in ("OpenAIConnection", "Union[OpenAIConnection, AzureOpenAIConnection]", "CustomConnection"):
        (folder / "setup_env.py").write_text(tool.format(annotation))
        assert engine.python_connections(dag, connection, folder) == {"setup_env": {"connection": connection}}
    # no LLM node: the variant's binding (no node) binds nothing instead of failing the run
    assert engine.all_llm_bindings(Path("."), dag, [engine.LLMBinding(connection=connection)]) == []


def test_the_flows_node_variants_become_variants_as_the_template_runs_them() -> None:
    facts = flow_facts.read(REPO / "tests/fixtures/template_parser/flows/answer")
    plan, note = import_spec.variants_of(facts)
    assert plan == {"variants": ("v1", "v2"), "variant_node_variants": {"v2": {"draft": "long"}}}
    assert note == "variants: v1 the flow's default node variants, v2: draft=long (the template's node variants)"
    spec = catalogue.UseCaseSpec(name="x", dataset="d", flow="f", eval_flow="e", inputs=("q",), label="a",
                                 mapping={}, prediction="answer", correct="c", **plan)  # fmt: skip
    variants = yaml.safe_load(catalogue.render_config(spec))["x"]["variants"]
    assert "node_variants" not in variants["v1"] and variants["v2"]["node_variants"] == {"draft": "long"}


def test_an_overlays_evaluator_flow_and_mappings_apply_to_its_env_only(project: Project, tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    shutil.copytree(folder / "flows/evaluation", folder / "flows/evaluation_strict")
    (folder / "experiment.audit.yaml").write_text(
        "evaluators:\n- name: intent_eval\n  flow: flows/evaluation_strict\n  datasets:\n"
        "  - name: tickets_train\n    mappings:\n      expected: billing\n      predicted: ${run.outputs.intent}\n"
    )
    out = project.sh("llmops", "import-experiment", str(folder), "--name", "audited").stdout
    assert "[audit] experiment.audit.yaml: eval_flow use_cases/audited/flows/evaluation_strict in env audit" in out
    assert "mappings.expected: the literal 'billing' becomes the column const_expected" in out
    assert "[audit] the ground truth const_expected is written as the column intent, as in the base" in out
    env = (project.root / "conf/env/dev.yaml").read_text().replace("name: dev", "name: audit")
    (project.root / "conf/env/audit.yaml").write_text(env)
    for env_name, eval_flow, dataset in [("audit", "evaluation_strict", "tickets_train.jsonl"),
                                         ("pr", "evaluation", "tickets_train_eval.jsonl")]:  # fmt: skip
        project.params(f"env={env_name}")
        composed = yaml.safe_load((project.root / "params.yaml").read_text())["use_cases"]["audited"]
        assert composed["eval_flow"] == f"use_cases/audited/flows/{eval_flow}"
        assert composed["dataset"] == f"use_cases/audited/data/{dataset}"
        assert composed["evaluate"]["mapping"] == {"expected": "data.intent", "predicted": "outputs.intent"}
    audit_rows = (project.root / "use_cases/audited/data/tickets_train.jsonl").read_text().splitlines()
    assert {json.loads(row)["intent"] for row in audit_rows} == {"billing"}  # the overlay's literal ground truth


def test_the_import_says_what_a_flows_requirements_need_as_the_run_stage_checks_them(tmp_path: Path) -> None:
    flow = tmp_path / "flows" / "standard"
    shutil.copytree(FIXTURE / "flows" / "experiment", flow)
    (flow / "requirements.txt").write_text("promptflow\npromptflow-sdk[builtins]\n")
    steps, notes = import_spec.requirements(flow, "use_cases/ner/flows/standard")
    assert steps == [] and len(notes) == 1  # the template's named_entity_recognition: nothing to install
    assert notes[0].startswith("use_cases/ner/flows/standard/requirements.txt, line 2: promptflow-sdk[builtins]: ")
    (flow / "requirements.txt").write_text("bs4-llmops-test-missing\npromptflow-sdk[builtins]\n")
    [step], _ = import_spec.requirements(flow, "use_cases/web/flows/standard")
    assert step.startswith("use_cases/web/flows/standard/requirements.txt: not installed here: bs4-llmops-test-missing")
    assert step.endswith(" -m pip install bs4-llmops-test-missing")  # the packages, not -r: never promptflow-sdk


def test_a_flow_that_parses_its_llms_answer_as_json_asks_for_json_and_an_overlays_list_input_imports(
    project: Project, stub_llm: StubLLM
) -> None:
    """The template's math_coding: its standard flow json.loads the LLM's answer (the base model behind llama.cpp
    does not keep to the prompt's format). The import sets `json_answers` on the variants and says why; the run's
    requests then ask for JSON (llama.cpp's grammar on local's completion API), as the judges' do. Its `history`
    overlay maps the list-typed chat_history that the base does not: a list in that env only."""
    from stages.llm import upstream

    stub_llm.script({"QUESTION: What is 2 + 2?": '{"answer": "4"}', "QUESTION: What is 3 * 3?": '{"answer": "9"}'})
    out = project.sh("llmops", "import-experiment", str(JSON_FIXTURE)).stdout
    assert (
        "variants.<v>.json_answers: true (parse_answer.py of flows/standard parse(s) an answer with json.loads)" in out
    )
    assert "data.lists: chat_history (input chat_history of" in out
    config = yaml.safe_load((project.root / "conf/use_cases/math_json.yaml").read_text())["math_json"]
    assert [v["json_answers"] for v in config["variants"].values()] == [True, True]
    assert config["data"]["lists"] == ["chat_history"] and "json_answers" not in config["evaluate"]

    project.repro("evaluate@math_json")
    asked = [r for r in stub_llm.requests() if "QUESTION:" in json.dumps(r["body"])]
    assert asked and all(r["body"]["grammar"] == upstream.JSON_GRAMMAR for r in asked)
    # Its chat node sets no max_tokens: run as the completion tool (local's API), it gets the connection's default,
    # not that tool's 16 (which cuts a JSON answer in half)
    assert {r["body"]["max_tokens"] for r in asked} == {256}
    metrics = json.loads((project.root / "data/math_json/eval/metrics.json").read_text())
    assert metrics["headline"]["accuracy"]["value"] == 1.0 and metrics["rows"] == 2

    env = (project.root / "conf/env/dev.yaml").read_text().replace("name: dev", "name: history")
    (project.root / "conf/env/history.yaml").write_text(env)
    project.params("env=history")
    project.repro("run@math_json")
    prepared = [json.loads(line) for line in (project.root / "data/math_json/prepared.jsonl").open()]
    assert [row["chat_history"] for row in prepared][1][0]["outputs"] == {"answer": "Hello"}
