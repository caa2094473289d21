"""The reference template's parser cases (its tests/test_experiment.py at b96252e) against ours, on fixtures
written in the template's schema (tests/fixtures/template_parser): same inputs, same expected results."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from stages.usecases import experiment as exp
from stages.usecases import flow_facts
from stages.usecases.experiment import Dataset, Evaluator, MappedDataset

BASE = REPO / "tests" / "fixtures" / "template_parser"


def test_standard_datasets_and_their_local_and_remote_sources() -> None:
    raw = [
        {"name": "cloud", "source": "azureml:cloud:9", "mappings": {"claim": "claim_mapping"}},
        {"name": "questions", "source": "questions.jsonl", "description": "d", "mappings": {"q": "q_mapping"}},
        {"name": "tickets", "source": "tickets.jsonl", "mappings": {"q": "${data.subject}"}},
    ]
    known, mapped = exp.standard_datasets(raw, "experiment.yaml: datasets")
    assert known == {
        "cloud": Dataset("cloud", "azureml:cloud:9"),
        "questions": Dataset("questions", "questions.jsonl", "d"),
        "tickets": Dataset("tickets", "tickets.jsonl"),
    }
    assert mapped[1] == MappedDataset(known["questions"], {"q": "q_mapping"})  # a mapping need not be ${...}
    assert not any(d.is_eval for d in known.values())
    assert known["cloud"].local_source(BASE) is None
    assert known["questions"].local_source(BASE) == BASE / "questions.jsonl"  # <base>/<source> when it exists
    assert known["tickets"].local_source(BASE) == BASE / "data" / "tickets.jsonl"  # else <base>/data/<source>


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ([{}], "datasets[0]: dataset 'None' is missing 'name'"),
        ([{"name": "g"}], "datasets[0]: dataset 'g' is missing 'source'"),
        ([{"name": "g", "source": "g.jsonl"}], "datasets[0]: dataset 'g' is missing 'mappings'"),
        ([{"name": "g", "source": "g.jsonl", "mappings": {}, "reference": "r"}], "datasets[0].reference: not allowed"),
    ],
)
def test_standard_dataset_errors_name_the_file_and_key(raw: list, error: str) -> None:
    with pytest.raises(exp.ExperimentError) as caught:
        exp.standard_datasets(raw, "exp/experiment.yaml: datasets")
    assert str(caught.value).startswith(f"exp/experiment.yaml: {error}")


def test_evaluation_datasets_by_name_or_by_reference() -> None:
    existing = {"g_ref": Dataset("g_ref", "g_ref.jsonl"), "a": Dataset("a", "a.jsonl")}
    raw = [
        {"name": "g", "source": "azureml:g:1", "reference": "g_ref", "mappings": {"claim": "x"}},
        {"name": "r", "source": "r.jsonl", "description": "d", "reference": "g_ref", "mappings": {"gt": "y"}},
        {"name": "a", "mappings": {"text": "z"}},
    ]
    mapped = exp.evaluation_datasets(raw, existing, "experiment.yaml: evaluators[0].datasets")
    assert mapped == [
        MappedDataset(Dataset("g", "azureml:g:1", None, "g_ref"), {"claim": "x"}),
        MappedDataset(Dataset("r", "r.jsonl", "d", "g_ref"), {"gt": "y"}),
        MappedDataset(existing["a"], {"text": "z"}),
    ]
    assert mapped[0].dataset.is_eval and mapped[1].dataset.is_eval and not mapped[2].dataset.is_eval
    assert mapped[1].dataset.local_source(Path("path")) == Path("path/data/r.jsonl")


@pytest.mark.parametrize(
    ("raw", "existing", "error"),
    [
        ([{}], {}, "[0]: dataset 'None' is missing 'name'"),
        ([{"name": "g"}], {}, "[0]: dataset 'g' is missing 'mappings'"),
        ([{"name": "g", "mappings": {}}], {}, "[0]: dataset 'g' (not a standard dataset) is missing 'source'"),
        (
            [{"name": "g", "source": "s", "mappings": {}}],
            {},
            "[0]: dataset 'g' (not a standard dataset) is missing 'reference'",
        ),
        ([{"name": "g", "source": "s2", "mappings": {}}], {"g": Dataset("g", "s")}, "[0].source: not allowed"),
        ([{"name": "g", "reference": "r", "mappings": {}}], {"g": Dataset("g", "s")}, "[0].reference: not allowed"),
        (
            [{"name": "g", "source": "s", "reference": "g_ref", "mappings": {}}],
            {},
            "[0].reference: referenced dataset 'g_ref' not defined",
        ),
    ],
)
def test_evaluation_dataset_errors_name_the_file_and_key(raw: list, existing: dict, error: str) -> None:
    with pytest.raises(exp.ExperimentError) as caught:
        exp.evaluation_datasets(raw, existing, "experiment.yaml: evaluators[1].datasets")
    assert str(caught.value).startswith(f"experiment.yaml: evaluators[1].datasets{error}")


def test_evaluators_resolve_their_flow_and_find_the_datasets_of_a_standard_dataset() -> None:
    existing = {"g_ref": Dataset("g_ref", "g_ref.jsonl"), "r": Dataset("r", "r.jsonl")}
    raw = [
        {
            "name": "g_eval",
            "flow": "g_eval_flow",
            "datasets": [{"name": "g", "source": "g.jsonl", "reference": "g_ref", "mappings": {"claim": "c"}}],
        },
        {"name": "r_eval", "datasets": [{"name": "r", "mappings": {"input": "i", "gt": "t"}}]},
    ]
    base = Path("/path/to/flow")
    found = exp.evaluators(raw, existing, base, "experiment.yaml: evaluators")
    assert found == [
        Evaluator(
            "g_eval", (MappedDataset(Dataset("g", "g.jsonl", None, "g_ref"), {"claim": "c"}),), base / "g_eval_flow"
        ),
        Evaluator("r_eval", (MappedDataset(existing["r"], {"input": "i", "gt": "t"}),), base / "r_eval"),
    ]
    assert found[0].datasets_for("g_ref") == list(found[0].datasets)
    assert found[1].datasets_for("r") == list(found[1].datasets)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ([{}], "evaluators[0]: evaluator 'None' is missing 'name'"),
        ([{"name": "g"}], "evaluators[0]: evaluator 'g' is missing 'datasets'"),
    ],
)
def test_evaluator_errors_name_the_file_and_key(raw: list, error: str) -> None:
    with pytest.raises(exp.ExperimentError, match=r"^experiment\.yaml: " + error.replace("[", r"\[")):
        exp.evaluators(raw, {"g": Dataset("g", "s")}, BASE, "experiment.yaml: evaluators")


def test_the_flows_llm_nodes_include_nodes_with_variants() -> None:
    # the template's test_experiment_creation: node variants and plain LLM nodes are all LLM nodes
    facts = flow_facts.read(BASE / "flows" / "answer")
    assert facts.llm_nodes == ("draft", "polish") and facts.variant_nodes == {"draft"}
    assert flow_facts.default_llm_node(facts) == "polish"  # the one that takes the variants' prompt


BASE_DATASETS = [
    MappedDataset(
        Dataset("questions", "questions.jsonl", "Questions and their answers."), {"question": "${data.question}"}
    ),
    MappedDataset(Dataset("tickets", "tickets.jsonl"), {"question": "${data.subject}"}),
]
BASE_EVALUATORS = [
    Evaluator(
        "exact",
        (
            MappedDataset(BASE_DATASETS[0].dataset, {"question": "${data.question}", "expected": "${data.answer}"}),
            MappedDataset(
                Dataset("tickets_graded", "tickets_graded.jsonl", "Tickets with the grade a person gave.", "tickets"),
                {"expected": "${data.grade}"},
            ),
        ),
        BASE / "exact",
    ),
    Evaluator(
        "judge",
        (
            MappedDataset(BASE_DATASETS[1].dataset, {"question": "${data.body}"}),
            MappedDataset(Dataset("questions_rubric", "questions_rubric.jsonl", None, "questions"), {}),
        ),
        BASE / "judge",
    ),
]
CANARY = Dataset("canary", "canary.jsonl")
OVERLAY_DATASETS = [MappedDataset(CANARY, {"question": "${data.question}"})]
OVERLAY_EVALUATORS = [
    Evaluator(
        "spot_check",
        (
            MappedDataset(CANARY, {"expected": "${data.answer}"}),
            MappedDataset(Dataset("canary_graded", "canary_graded.jsonl", None, "canary"), {}),
        ),
        BASE / "spot_check",
    ),
]


def test_load_base_experiment() -> None:
    loaded = exp.load_base(BASE / "experiment.yaml", BASE)
    assert (loaded.base_path, loaded.name, loaded.flow, loaded.runtime) == (
        BASE,
        "faq",
        "flows/answer",
        "shared-runtime",
    )
    assert loaded.datasets == BASE_DATASETS
    assert loaded.evaluators == BASE_EVALUATORS  # every dataset of every evaluator, none dropped


@pytest.mark.parametrize(
    ("env", "datasets", "evaluators", "runtime"),
    [
        ("canary", OVERLAY_DATASETS, OVERLAY_EVALUATORS, "canary-runtime"),  # both blocks replaced
        ("nightly", OVERLAY_DATASETS, BASE_EVALUATORS, "shared-runtime"),  # datasets only: base evaluators kept
        # evaluators only: they resolve against the base datasets; `runtime:` empties the runtime
        (
            "judged",
            BASE_DATASETS,
            [
                Evaluator(
                    "spot_check",
                    (MappedDataset(BASE_DATASETS[0].dataset, {"expected": "${data.reference_answer}"}),),
                    BASE / "spot_check",
                )
            ],
            None,
        ),
        ("empty", [], [], "shared-runtime"),  # empty blocks empty them, no crash
        ("nowhere", BASE_DATASETS, BASE_EVALUATORS, "shared-runtime"),  # no such overlay: the base
    ],
)
def test_overlays_replace_only_the_blocks_they_name(env: str, datasets: list, evaluators: list, runtime) -> None:
    loaded = exp.load(BASE, env)
    assert (loaded.name, loaded.flow, loaded.base_path) == ("faq", "flows/answer", BASE)
    assert loaded.datasets == datasets
    assert loaded.evaluators == evaluators
    assert loaded.runtime == runtime


def test_any_env_name_is_an_overlay() -> None:
    assert exp.envs(BASE) == ["canary", "empty", "judged", "nightly"]


def test_a_missing_file_or_datasets_block_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(exp.ExperimentError, match=r"experiment\.yaml: no such experiment file"):
        exp.load(tmp_path)
    (tmp_path / "experiment.yaml").write_text("name: x\ndatasets:\n")
    with pytest.raises(exp.ExperimentError, match=r"experiment\.yaml: datasets: no datasets configured"):
        exp.load(tmp_path)
    (tmp_path / "experiment.yaml").write_text("name: x\ndatasets: [\n")
    with pytest.raises(exp.ExperimentError, match=r"experiment.yaml:\d+: not valid YAML"):
        exp.load(tmp_path)
