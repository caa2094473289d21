"""PR subsets sized to decide: which use cases a PR changes before it runs, and the rows each one gets."""

from __future__ import annotations

import re

import pytest

from stages.results import changes, sizing
from stages.results.gate import GateConfigError

CAPS = sizing.Caps(max_rows=200, max_llm_requests=1000)


def test_an_unchanged_use_case_keeps_the_small_subset() -> None:
    kept = sizing.size("uc", [], 12, [157], 500, 1.0, CAPS)
    assert (kept.rows, kept.why) == (12, "unchanged: the small subset") and sizing.overrides([kept]) == []


@pytest.mark.parametrize(
    ("needed", "dataset", "per_row", "rows", "why"),
    [
        ([157, 40], 500, 1.0, 157, "changed: 157 rows detect max_drop"),
        ([157], 72, 1.0, 72, "changed: max_drop needs 157 rows, capped by the dataset at 72"),
        ([900], 5000, 1.0, 200, "changed: max_drop needs 900 rows, capped by max_rows at 200"),
        ([157], 500, 10.0, 100, "changed: max_drop needs 157 rows, capped by max_llm_requests at 100"),
        (
            [157, None],
            500,
            1.0,
            200,
            "changed: max_drop needs more rows than can be planned, capped by max_rows at 200",
        ),
        ([5], 500, 1.0, 12, "changed: 5 rows detect max_drop"),  # never fewer than the small subset
    ],
)
def test_a_changed_use_case_runs_what_its_max_drop_needs_within_the_caps(
    needed: list[int | None], dataset: int, per_row: float, rows: int, why: str
) -> None:
    sized = sizing.size("uc", ["use_cases/uc/flows/x changed"], 12, needed, dataset, per_row, CAPS)
    assert (sized.rows, sized.why) == (rows, why)
    assert sizing.overrides([sized]) == ([f"+env.subset.by_use_case.uc={rows}"] if rows > 12 else [])


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"max_rows": 0}, "conf/env/pr.yaml: gate.sizing.max_rows: expected a whole number >= 1, got 0"),
        ({"max_llm_requests": 5}, "conf/env/pr.yaml: gate.sizing: expected {max_rows: rows, max_llm_requests:"),
        ({"max_rows": 10, "rows": 3}, "conf/env/pr.yaml: gate.sizing: expected"),
    ],
)
def test_bad_sizing_names_the_file_and_key(block: object, message: str) -> None:
    with pytest.raises(GateConfigError, match=re.escape(message)):
        sizing.parse_caps(block, "conf/env/pr.yaml: gate.sizing")
    assert sizing.parse_caps({"max_rows": 10, "max_llm_requests": None}, "x") == sizing.Caps(10, None)
    assert sizing.parse_caps(None, "x") is None


def test_pending_changes_are_the_baseline_locks_inputs_git_or_params_moved() -> None:
    run = {"deps": [{"path": "data/uc/prepared.jsonl", "md5": "a"}, {"path": "use_cases/uc/flows/classify", "md5": "b"},
                    {"path": "stages/run.py", "md5": "c"}],
           "params": {"params.yaml": {"llm": {"model": "gemma"}, "env.subset": {"rows": 12}}}}  # fmt: skip
    prepare = {"deps": [{"path": "use_cases/uc/data/pages.jsonl", "md5": "d"}], "params": {}}
    lock = {"stages": {"run@uc": run, "prepare@uc": prepare}}
    params = {"llm": {"model": "gemma"}, "env": {"subset": {"rows": 500}}}
    assert changes.pending(lock, "uc", params, {"stages/run.py", "README.md", "data/uc/prepared.jsonl"}) == []
    prompt = {"use_cases/uc/flows/classify/classify_v1.jinja2"}
    assert changes.pending(lock, "uc", params, prompt) == ["use_cases/uc/flows/classify changed"]
    assert changes.pending(lock, "uc", params, {"use_cases/uc/data/pages.jsonl.dvc"}) == [
        "use_cases/uc/data/pages.jsonl changed"]  # fmt: skip
    assert changes.pending(lock, "uc", {"llm": {"model": "gpt"}}, set()) == ["param llm.model changed"]
    assert changes.pending(lock, "new", params, set()) == ["new: not in the baseline's dvc.lock"]


def test_requests_per_row_and_a_use_case_without_metrics() -> None:
    run_rows = [{"llm": {"requests": 2}}, {"llm": {"requests": 1}}, {"llm": None}]
    assert sizing.requests_per_row(run_rows, 2) == 3.0 and sizing.requests_per_row([], 1) == 1.0
    plain = sizing.size("uc", ["x changed"], 12, [], 500, 1.0, CAPS)
    assert (plain.rows, plain.why) == (12, "changed, but no headline metric to plan")
