"""Repeats (`bulk.repeats: k`) and cost from the price table: the spread and stability arithmetic on hand-made
rows, cost against hand values, and the pipeline on the stub LLM (k distinct cached requests, a free rerun, the
unpriced-model warning)."""

from __future__ import annotations

import json
import re
import statistics

import numpy as np
import pytest
from conftest import Project, StubLLM
from stub_llm import pick_answer

from stages.metrics import cost, headline, repeats, stats
from stages.results import reporting
from stages.results.formatting import headline_text, total_cost
from stages.results.rows import VariantReport, side_by_side

ACCURACY = headline.parse_specs({"accuracy": "correct"}, "m")[0]
PRECISION = headline.parse_specs({"precision": {"ratio": {"numerator": "tp", "denominator": "p"}}}, "m")[0]


def repeated(per_row: list[list[object]], field: str = "correct") -> list[dict]:
    """Rows r0.. each with one record per repeat, the value of `field` in repeat j being per_row[i][j]."""
    return [{"row_id": f"r{i}", "repeat": j, "eval": {field: value}}
            for i, values in enumerate(per_row) for j, value in enumerate(values)]  # fmt: skip


# 4 rows x 3 repeats. Per repeat accuracy: 3/4, 1/4, 2/4. Rows r0 and r3 are the same in every repeat.
BASELINE = [[True, True, True], [True, False, True], [True, False, False], [False, False, False]]


def test_spread_and_stability_on_a_hand_made_example() -> None:
    result = headline.evaluate_metric(ACCURACY, repeated(BASELINE))
    assert result.spread is not None and result.spread.per_repeat == (0.75, 0.25, 0.5)
    assert result.spread.std == pytest.approx(statistics.stdev([0.75, 0.25, 0.5])) == 0.25
    assert result.spread.stable == 0.5  # r0 and r3 of 4 rows
    # The value averages each row over its repeats (1, 2/3, 1/3, 0); the CI resamples those 4 rows, not 12.
    row_means = [1.0, 2 / 3, 1 / 3, 0.0]
    assert result.rows == 4 and result.interval.estimate == pytest.approx(np.mean(row_means))
    assert result.interval == stats.bootstrap_ci(row_means)
    assert result.as_dict()["repeats"] == {"k": 3, "mean": 0.5, "std": 0.25, "min": 0.25, "max": 0.75, "stable": 0.5}
    assert "on 4 rows x 3 repeats, std 0.250 [0.250, 0.750], 50% of rows stable" in headline.describe(result)


def test_a_repeat_without_a_value_makes_its_row_unstable_and_rows_without_repeats_have_no_spread() -> None:
    rows = repeated([[1, 1], [0, 0], [1, 1]], "relevance")
    rows[5]["eval"] = {"relevance": None}  # r2's second repeat was not scored
    result = headline.evaluate_metric(headline.parse_specs({"relevance": "relevance"}, "m")[0], rows)
    assert result.spread.stable == pytest.approx(2 / 3) and result.spread.per_repeat == (2 / 3, 0.5)
    plain = headline.evaluate_metric(ACCURACY, [{"row_id": "a", "eval": {"correct": True}}])
    assert plain.spread is None and "repeats" not in plain.as_dict()


def test_a_ratio_is_computed_per_repeat_and_over_row_means() -> None:
    # precision = sum tp / sum p. Repeat 0: (1+0)/(1+1) = 0.5; repeat 1: (1+1)/(1+2) = 2/3.
    counts = {("a", 0): (1, 1), ("a", 1): (1, 1), ("b", 0): (0, 1), ("b", 1): (1, 2)}
    rows = [{"row_id": row, "repeat": k, "eval": {"tp": tp, "p": p}} for (row, k), (tp, p) in counts.items()]
    result = headline.evaluate_metric(PRECISION, rows)
    assert result.spread.per_repeat == pytest.approx((0.5, 2 / 3)) and result.spread.stable == 0.5
    assert result.interval.estimate == pytest.approx((1 + 0.5) / (1 + 1.5))  # row means: a (1, 1), b (0.5, 1.5)


def test_the_comparison_with_the_baseline_pairs_row_means() -> None:
    candidate = [[True, True, True], [True, True, True], [True, True, False], [False, True, False]]
    results = headline.headline([ACCURACY], {"v1": repeated(BASELINE), "v2": repeated(candidate)}, "v1")
    comparison = results["v2"]["accuracy"].comparison
    expected = stats.paired_bootstrap([1, 2 / 3, 1 / 3, 0], [1, 1, 2 / 3, 1 / 3])  # row means are not pass/fail
    assert comparison == expected and comparison.rows == 4 and comparison.effect == pytest.approx(0.25)
    # Rows identical in every repeat are pass/fail again: McNemar on the rows.
    stable = [[True] * 3, [False] * 3, [True] * 3, [True] * 3]
    results = headline.headline([ACCURACY], {"v1": repeated(BASELINE[:1] * 4), "v2": repeated(stable)}, "v1")
    assert results["v2"]["accuracy"].comparison.test == "McNemar exact"


def test_repeat_helpers_keep_k_1_records_unchanged() -> None:
    assert repeats.count({"repeats": 3}) == 3 and repeats.count({}) == 1
    assert repeats.field(0, 1) == {} and repeats.field(2, 3) == {"repeat": 2}
    assert repeats.tag("r7", 0, 1) == "r7" and repeats.tag("r7", 2, 3) == "r7#2"
    assert repeats.in_records([{"row_id": "a"}]) == 1 and repeats.in_records(repeated([[1, 0, 1]])) == 3


def test_cost_against_hand_values() -> None:
    prices = {"usd_per_1m_tokens": {"gpt-4o-mini": {"input": 0.15, "output": 0.60}, "local": {"input": 0, "output": 0}}}
    price = cost.price_for(prices, "gpt-4o-mini")
    # 120,000 prompt tokens at $0.15/1M = $0.018; 30,000 completion tokens at $0.60/1M = $0.018.
    tokens = {"prompt": 120_000, "completion": 30_000, "prompt_cached": 20_000, "completion_cached": 10_000}
    assert cost.cost_metrics(tokens, price) == {"usd": 0.036, "usd_cached": 0.009}  # cached: 0.003 + 0.006
    assert cost.cost_metrics(tokens, cost.price_for(prices, "local")) == {"usd": 0.0, "usd_cached": 0.0}
    assert cost.price_for(prices, "gpt-5") is None  # unknown: null, never 0
    assert cost.cost_metrics(tokens, None) == {"usd": None, "usd_cached": None}
    warning = cost.unpriced_warning("run uc", "gpt-5")
    assert "'gpt-5'" in warning and "conf/prices.yaml" in warning and "null" in warning
    with pytest.raises(cost.PriceError, match=r"conf/prices\.yaml: prices\.usd_per_1m_tokens\.m: expected"):
        cost.price_for({"usd_per_1m_tokens": {"m": {"input": 1}}}, "m")
    with pytest.raises(cost.PriceError, match=r"prices must be >= 0"):
        cost.price_for({"usd_per_1m_tokens": {"m": {"input": -1, "output": 0}}}, "m")


def test_report_and_summary_line_show_spread_tokens_and_cost() -> None:
    spread = {"k": 3, "mean": 0.5833, "std": 0.1443, "min": 0.5, "max": 0.75, "stable": 0.5}
    result = {"accuracy": {"value": 0.5, "ci_low": 0.2, "ci_high": 0.8, "rows": 4, "repeats": spread}}
    assert headline_text(result) == "accuracy 50.0% [20.0%, 80.0%] ±14.4% over 3 repeats, 50% stable"
    run = {"rows": 4, "latency_s": {"p50": 0.2, "p95": 0.3}, "tokens": {"prompt": 1200, "completion": 30},
           "cost": {"usd": 0.0012, "usd_cached": 0.0}}  # fmt: skip
    judged = {"rows": 12, "repeats": 3, "headline": result, "tokens": {"prompt": 500, "completion": 5},
              "cost": {"usd": 0.0003, "usd_cached": 0.0}}  # fmt: skip
    assert total_cost(run, judged) == pytest.approx(0.0015)
    assert total_cost(run, {**judged, "cost": {"usd": None, "usd_cached": None}}) is None
    records = [{"row_id": r["row_id"], "repeat": r["repeat"], "label": "x", "prediction": "x", "correct": True,
                "raw_answer": "x", "latency_s": 0.1, "error": ""} for r in repeated(BASELINE)]  # fmt: skip
    part = VariantReport("v1", records, judged, run)
    rows = side_by_side([part], ())
    assert [(row["row_id"], row["repeat"]) for row in rows[:3]] == [("r0", 0), ("r0", 1), ("r0", 2)]
    page = reporting.render_html("uc", {}, [part], rows, 60, 50)
    assert "<h2>Run-to-run variation</h2>" in page and "evaluated: 4 rows x 3 repeats" in page
    assert "<td>v1</td><td>accuracy</td><td>3</td><td>58.3%</td><td>14.4%</td><td>50.0%</td><td>75.0%</td>" in page
    assert "<td>0.20 s</td><td>0.30 s</td>" in page and "<td>1,200 / 30</td><td>500 / 5</td><td>$0.0015</td>" in page
    unpriced = VariantReport("v1", records, judged, {**run, "cost": {"usd": None, "usd_cached": None}})
    page = reporting.render_html("uc", {}, [unpriced], rows, 60, 50)
    assert "n/a (a model has no price in conf/prices.yaml)" in page


def test_the_stub_samples_another_answer_per_repeat() -> None:
    answers = tuple(f"a{i}" for i in range(50))
    assert pick_answer("p", answers, sample=0) == pick_answer("p", answers)
    assert len({pick_answer("p", answers, sample=s) for s in range(5)}) > 1


# The pipeline on the stub LLM.


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_repeats_make_k_distinct_cached_requests_and_a_rerun_asks_nothing(project: Project, stub_llm: StubLLM) -> None:
    uc = "web_classification"
    sampled = f"use_cases.{uc}.variants.v1.params.temperature=0.8"
    project.params("env=pr", "bulk.repeats=3", sampled)
    project.repro(f"report@{uc}")
    sent = stub_llm.requests()
    assert len(sent) == 12 * 3  # each row, each repeat: its own request...
    assert sorted(r["headers"]["X-LLMOps-Repeat"] for r in sent) == ["0"] * 12 + ["1"] * 12 + ["2"] * 12
    data = project.root / "data" / uc
    assert len(list((data / "run" / "llm_cache").rglob("*.json"))) == 36  # ...cached apart
    outputs = read_jsonl(data / "run" / "outputs" / "v1.jsonl")
    assert [(o["row_id"], o["repeat"]) for o in outputs[:3]] == [(outputs[0]["row_id"], r) for r in range(3)]
    answers = {}
    for output in outputs:
        answers.setdefault(output["row_id"], []).append(output["outputs"]["raw"])
    varied = sum(1 for raws in answers.values() if len(set(raws)) > 1)
    assert len(answers) == 12 and varied > 0  # temperature 0.8: the stub samples per repeat
    summary = json.loads((data / "run" / "summary.json").read_text())
    assert summary["rows"] == 12 and summary["repeats"] == 3
    assert summary["outputs_identical"] == pytest.approx(round((12 - varied) / 12, 4))
    assert summary["cost"] == {"usd": 0.0}  # the local model is priced at 0
    assert json.loads((data / "run" / "operations.json").read_text())["cost"] == {"usd_cached": 0.0}
    metrics = json.loads((data / "eval" / "metrics.json").read_text())
    evaluated = read_jsonl(data / "eval" / "rows" / "v1.jsonl")
    assert metrics["repeats"] == 3 and metrics["rows"] == len(evaluated) == 36
    spread = metrics["headline"]["accuracy"]["repeats"]
    per_repeat = [np.mean([bool(r["eval"]["correct"]) for r in evaluated if r["repeat"] == k]) for k in range(3)]
    assert spread["k"] == 3 and spread["min"] == pytest.approx(min(per_repeat), abs=1e-4)
    assert spread["std"] == pytest.approx(statistics.stdev(per_repeat), abs=1e-4)
    assert metrics["headline"]["accuracy"]["rows"] == 12
    page = (data / "report" / "report.html").read_text()
    assert "Run-to-run variation" in page and "$0.0000" in page
    shown = project.sh("llmops", "summary").stdout
    assert re.search(r"over 3 repeats, \d+% stable .*rows 12 x 3 repeats .*cost \$0\.0000", shown)

    project.sh("dvc", "repro", "--force", f"evaluate@{uc}")
    assert len(stub_llm.requests()) == 36  # a rerun is answered by the cache
    again = read_jsonl(data / "run" / "outputs" / "v1.jsonl")
    assert [(o["row_id"], o["repeat"], o["outputs"]) for o in again] == [
        (o["row_id"], o["repeat"], o["outputs"]) for o in outputs
    ]
    assert all(o["llm"]["cache_hits"] == 1 for o in again)

    # A model the price table does not know: the cost is null (not 0), with a warning naming it and the file.
    project.params("env=pr", "bulk.repeats=3", sampled, "server.model_alias=mystery-model")
    result = project.sh("dvc", "repro", f"run@{uc}")
    assert "no price for model 'mystery-model' in conf/prices.yaml" in result.stdout + result.stderr
    assert json.loads((data / "run" / "summary.json").read_text())["cost"] == {"usd": None}
    assert json.loads((data / "run" / "operations.json").read_text())["cost"] == {"usd_cached": None}
