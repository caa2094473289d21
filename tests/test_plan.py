"""`llmops plan`: rows needed and detectable drops from the last evaluation, paired with the baseline variant's
rows when the evaluation has them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from scipy import stats as scipy_stats
from test_gate import snapshot

from stages import cli
from stages.metrics import headline, power
from stages.results import plan

REPO = Path(__file__).resolve().parents[1]
SPECS = headline.parse_specs({"accuracy": "correct"}, "use_cases.uc.metrics")


def test_a_plan_without_a_second_variant_is_the_optimistic_one() -> None:
    rows = snapshot([True] * 8 + [False] * 4).rows
    (accuracy,) = plan.plan(SPECS, rows, None, None, detect=0.05)
    assert (accuracy.rows, accuracy.paired_with, accuracy.spread, accuracy.rows_needed) == (12, None, 0.0, 157)
    assert accuracy.mde is not None and scipy_stats.binom.sf(5, 12, accuracy.mde) == pytest.approx(0.8, abs=1e-4)
    text = plan.render("uc", "v1", [accuracy], 0.05, 0.8)
    assert "no second variant: the noise of a drop concentrated on the rows it breaks (optimistic)" in text
    assert "today's 12 rows detect drops of 57.8 pts or more; a drop of 5.0 pts with 0%" in text
    assert "to detect a drop of 5.0 pts: 157 rows" in text


def test_a_plan_uses_the_discordance_against_the_baseline_variant() -> None:
    base = snapshot([True] * 30 + [False] * 10).rows
    cand = snapshot([True] * 25 + [False] * 5 + [True] * 5 + [False] * 5).rows  # 5 broken, 5 fixed: 25% flipped
    (accuracy,) = plan.plan(SPECS, cand, base, "v1", detect=0.1)
    assert (accuracy.paired_with, accuracy.spread) == ("v1", 0.25)
    flipped = power.Paired(power.PASS_FAIL, 40, 0.0, 0.25)
    assert accuracy.rows_needed == power.rows_needed(flipped, 0.1) and accuracy.rows_needed > 40
    assert accuracy.power_now == pytest.approx(power.power(flipped, 0.1))
    assert "25.0% of rows flipped against v1" in plan.render("uc", "v2", [accuracy], 0.05, 0.8)


def _project(root: Path, rows: list[dict], variant: str = "v1") -> None:
    (root / ".dvc").mkdir(parents=True)
    shutil.copytree(REPO / "conf", root / "conf")
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    evals = root / "data" / "web_classification" / "eval"
    (evals / "rows").mkdir(parents=True)
    (evals / "metrics.json").write_text(json.dumps({"variant": variant, "baseline": "v1"}))
    (evals / "rows" / f"{variant}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_the_plan_command_reads_the_last_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _project(tmp_path, snapshot([True] * 8 + [False] * 4).rows)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plan", "--use-case", "web_classification", "--detect", "0.1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("web_classification (v1): 80% power, two-sided alpha 0.05\n  accuracy (pass/fail, ")
    assert "to detect a drop of 10.0 pts:" in out
    assert cli.main(["plan", "--use-case", "nope"]) == 2
    assert "plan: no use case nope in params.yaml" in capsys.readouterr().err
    assert cli.main(["plan", "--use-case", "chat"]) == 1
    assert "plan: no evaluation of chat to plan from" in capsys.readouterr().err
