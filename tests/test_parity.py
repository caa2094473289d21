"""Parity of two flows of one use case (stages/results/parity.py) and its gate line."""

from __future__ import annotations

import random

import pytest

from stages.metrics import headline
from stages.results import gate, parity

F1 = {"f1": {"tp": "tp", "predicted": "predicted", "gold": "gold"}}
SPECS = headline.parse_specs({"accuracy": "correct", "f1": F1}, "test")


def rows(n: int, correct: list[bool], prefix: str = "r") -> tuple[list[dict], list[dict]]:
    """(eval rows, run rows) of `n` rows with the given per-row correctness."""
    evals = [{"row_id": f"{prefix}{i}", "eval": {"correct": c, "tp": int(c), "predicted": 1, "gold": 1}}
             for i, c in enumerate(correct[:n])]  # fmt: skip
    runs = [{"row_id": f"{prefix}{i}", "outputs": {"category": "A" if c else "B"}, "error": None}
            for i, c in enumerate(correct[:n])]  # fmt: skip
    return evals, runs


def result(base: list[bool], cand: list[bool], margin: float = 0.05) -> parity.Parity:
    (be, br), (ce, cr) = rows(len(base), base), rows(len(cand), cand)
    return parity.parity(SPECS, ("pf", "maf"), (be, ce), (br, cr), "category", margin)


def test_identical_rows_are_equivalent_only_with_enough_rows() -> None:
    """Identical answers on few rows do not prove equivalence (the variance floor at the margin); on enough rows
    they do. Inconclusive says how many rows would."""
    rng = random.Random(0)
    answers = [rng.random() < 0.7 for _ in range(400)]
    few = result(answers[:40], answers[:40])
    assert few.verdict == "inconclusive" and few.outputs_agree == 1.0 and few.predictions_agree == 1.0
    accuracy = few.metrics[0]
    assert accuracy.test == "TOST" and accuracy.difference.estimate == 0 and accuracy.rows_needed > 40
    many = result(answers, answers)
    assert many.verdict == "equivalent"
    assert [m.verdict for m in many.metrics] == ["equivalent", "equivalent"]


def test_a_real_difference_is_not_equivalent() -> None:
    base = [True] * 300
    cand = [i % 4 != 0 for i in range(300)]  # 25 points worse
    found = result(base, cand)
    assert found.verdict == "not equivalent"
    accuracy = found.metrics[0]
    assert accuracy.difference.estimate == pytest.approx(-0.25)
    assert accuracy.difference.high < -0.05
    assert found.metrics[1].test == "bootstrap CI" and found.metrics[1].verdict == "not equivalent"
    assert found.predictions_agree == pytest.approx(0.75)


def test_only_shared_answered_rows_pair_up() -> None:
    (be, br), (ce, cr) = rows(3, [True, True, False]), rows(3, [True, True, False])
    cr[0]["error"], cr[0]["outputs"] = "boom", None
    found = parity.parity(SPECS, ("pf", "maf"), (be, ce), (br, cr), "category", 0.02)
    assert found.rows == 2
    with pytest.raises(parity.ParityError, match="no row in common"):
        parity.parity(SPECS, ("pf", "maf"), (be, ce), (br, rows(2, [True, True], prefix="x")[1]), "category", 0.02)


def test_the_gate_line_and_the_markdown() -> None:
    rng = random.Random(1)
    answers = [rng.random() < 0.7 for _ in range(40)]
    found = result(answers, answers, margin=0.02)
    check = gate.parity_check("web_maf", found)
    assert (check.check, check.value, check.limit, check.verdict) == ("parity vs pf", "inconclusive", "+-0.02",
                                                                      gate.INCONCLUSIVE)  # fmt: skip
    assert not check.fails and "rows would show equivalence" in check.note
    assert gate.parity_check("web_maf", result([True] * 300, [i % 4 != 0 for i in range(300)])).fails
    text = parity.markdown(found)
    assert "**Parity: maf vs pf: INCONCLUSIVE**" in text and "| accuracy | " in text


def test_settings_need_a_parity_block() -> None:
    assert parity.settings({"parity": {"against": "web", "margin": 0.03}}, "x") == ("web", 0.03, 0.05)
    with pytest.raises(parity.ParityError, match="no parity block"):
        parity.settings({}, "x")


def test_a_migration_pr_comment_shows_the_parity() -> None:
    """The gate adds the parity line to the use case's checks and the PR comment shows the parity table."""
    from stages.results import pr_comment

    rng = random.Random(2)
    answers = [rng.random() < 0.7 for _ in range(400)]
    found = result(answers, answers)
    outcome = gate.UseCaseResult("web_maf", [gate.parity_check("web_maf", found)], parity=parity.markdown(found))
    body = pr_comment.compose([outcome], baseline="main", baseline_rev="0" * 40, env="pr", metrics_diff_md="")
    assert "### Parity" in body and "**Parity: maf vs pf: EQUIVALENT**" in body
    assert "parity vs pf" in body and "| accuracy | " in body
