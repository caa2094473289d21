"""The use cases' own flow code, as plain functions: normalizers, graders and metric aggregations."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
from conftest import REPO


def load(relative: str) -> ModuleType:
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(f"flowcode_{path.parent.name}_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(path.parent))  # flows import their sibling modules (e.g. labels.py)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


WEB = "use_cases/web_classification/flows"
QA = "use_cases/general_qa/flows"


@pytest.mark.parametrize(
    "answer,category,valid",
    [(" Recipe", "Recipe", True), ("sports.", "Sports", True), (" Food", "Recipe", True),
     (" Film Festival", "Movie", True), (" Banana", "Other", False), ("", "Other", False)],
)  # fmt: skip
def test_web_normalize_maps_to_labels_and_keeps_raw(answer: str, category: str, valid: bool) -> None:
    result = load(f"{WEB}/classify/normalize.py").normalize(answer)
    assert result == {"category": category, "valid": valid, "raw": answer}


def test_web_classification_metrics() -> None:
    metrics = load(f"{WEB}/evaluate/aggregate.py").classification_metrics(
        ["News", "News", "App", "Movie"], ["News", "Movie", "App", "Other"]
    )
    assert metrics["accuracy"] == 0.5
    assert metrics["precision.News"] == 1.0 and metrics["recall.News"] == 0.5
    assert metrics["precision.Movie"] == 0.0 and metrics["recall.Movie"] == 0.0
    assert "recall.Other" not in metrics  # only ground-truth classes are scored
    assert metrics["macro_recall"] == round((0.5 + 1.0 + 0.0) / 3, 4)


@pytest.mark.parametrize(
    "prediction,exact,contains,f1",
    [(" Paris", True, True, 1.0), ("paris.", True, True, 1.0), ("The Nile", False, False, 0.0),
     ("Paris, France", False, True, 0.6667), ("Comparison", False, False, 0.0), ("da Vinci", True, True, 1.0)],
)  # fmt: skip
def test_qa_grade(prediction: str, exact: bool, contains: bool, f1: float) -> None:
    grade = load(f"{QA}/evaluate/grade.py").grade
    answer, aliases = ("Leonardo da Vinci", ["da Vinci"]) if "Vinci" in prediction else ("Paris", [])
    result = grade(answer, aliases, prediction)
    assert (result["exact"], result["contains"]) == (exact, contains)
    assert result["token_f1"] == f1 and 0 <= result["rouge_l"] <= 1


NER = "use_cases/named_entity_recognition/flows"


def test_ner_parse_keeps_requested_types_once_in_order() -> None:
    parse = load(f"{NER}/extract/parse.py").parse_entities
    answer = " person: Ada Lovelace; Locations: London, Paris.; planet: Mars; person: Ada Lovelace; organization:"
    assert parse(answer, "person, location, organization") == [
        {"type": "person", "text": "Ada Lovelace"},
        {"type": "location", "text": "London"},
        {"type": "location", "text": "Paris"},
    ]
    assert parse("no entities here", "person") == []


def test_ner_match_and_aggregate_exact_and_partial() -> None:
    match = load(f"{NER}/evaluate/match.py").match
    gold = [{"type": "person", "text": "Lena Sorel"}, {"type": "location", "text": "Bristol"}]
    predicted = [{"type": "person", "text": "Dr. Lena Sorel"}, {"type": "organization", "text": "Bristol"}]
    row = match(gold, predicted)
    assert row == {"exact_tp": 0, "partial_tp": 1, "predicted": 2, "gold": 2, "all_correct": False}
    perfect = match(gold, list(reversed(gold)))
    assert perfect["all_correct"] and perfect["exact_tp"] == 2

    metrics = load(f"{NER}/evaluate/aggregate.py").aggregate([row, perfect])
    assert metrics["exact_precision"] == metrics["exact_recall"] == 0.5
    assert metrics["partial_f1"] == 0.75 and metrics["rows_all_correct"] == 0.5
