"""Headline metrics: declared per use case, with CIs and paired comparisons; the variant plan behind them."""

from __future__ import annotations

import pytest

from stages.core import variants
from stages.metrics import headline, stats


def rows(values: list, field: str = "correct") -> list[dict]:
    return [{"row_id": f"r{i}", "eval": {field: value}} for i, value in enumerate(values)]


def test_specs_parse_and_bad_entries_name_the_key() -> None:
    specs = headline.parse_specs(
        {"accuracy": "correct", "f1": {"f1": {"tp": "c.tp", "predicted": "c.p", "gold": "c.g"}},
         "share": {"ratio": {"numerator": "a", "denominator": "b"}}}, "use_cases.x.metrics"
    )  # fmt: skip
    assert [(s.name, s.kind, s.fields) for s in specs] == [
        ("accuracy", "mean", ("correct",)), ("f1", "f1", ("c.tp", "c.p", "c.g")), ("share", "ratio", ("a", "b"))
    ]  # fmt: skip
    with pytest.raises(headline.MetricSpecError, match=r"use_cases\.x\.metrics\.bad: expected a per-row output"):
        headline.parse_specs({"bad": {"median": "x"}}, "use_cases.x.metrics")
    with pytest.raises(headline.MetricSpecError, match=r"use_cases\.x\.metrics\.f1\.f1: expected the keys tp"):
        headline.parse_specs({"f1": {"f1": {"tp": "a"}}}, "use_cases.x.metrics")


def test_mean_skips_rows_without_a_value_and_counts_booleans() -> None:
    spec = headline.parse_specs({"relevance": "relevance"}, "m")[0]
    result = headline.evaluate_metric(spec, rows([5, None, 3, 4], "relevance"))
    assert result.rows == 3 and result.interval.estimate == pytest.approx(4.0)
    assert result.interval.low <= 4.0 <= result.interval.high
    accuracy = headline.evaluate_metric(headline.parse_specs({"a": "correct"}, "m")[0], rows([True, False, True, True]))
    assert accuracy.interval.estimate == 0.75 and accuracy.as_dict()["rows"] == 4


def test_f1_from_counts_is_micro_f1_and_its_interval_is_seeded() -> None:
    counts = [
        {"tp": 2, "p": 3, "g": 2},
        {"tp": 0, "p": 1, "g": 2},
        {"tp": 1, "p": 1, "g": 1},
        {"tp": 3, "p": 4, "g": 5},
    ]
    data = [{"row_id": f"r{i}", "eval": {"counts": c}} for i, c in enumerate(counts)]
    spec = headline.parse_specs({"f1": {"f1": {"tp": "counts.tp", "predicted": "counts.p", "gold": "counts.g"}}}, "m")
    first = headline.evaluate_metric(spec[0], data)
    precision, recall = 6 / 9, 6 / 10  # micro: sums over rows
    assert first.interval.estimate == pytest.approx(2 * precision * recall / (precision + recall))
    assert first.interval.low <= first.interval.estimate <= first.interval.high
    assert headline.evaluate_metric(spec[0], data) == first  # same seed, same interval


def test_a_constant_ratio_has_a_zero_width_interval() -> None:
    # Every row's ratio is 1/2, so every resample's is: BCa is undefined here and the percentile fallback is exact.
    table = [[1, 2], [2, 4], [3, 6], [5, 10]]
    interval = stats.bootstrap_ci(table, statistic=lambda t: t[:, 0].sum() / t[:, 1].sum())
    assert (interval.estimate, interval.low, interval.high) == pytest.approx((0.5, 0.5, 0.5))


def test_pass_fail_metrics_compare_with_mcnemar_on_the_shared_rows() -> None:
    spec = headline.parse_specs({"accuracy": "correct"}, "m")[0]
    baseline = rows([True] * 10 + [False] * 10)
    candidate = [*rows([True] * 9 + [False] + [True] * 9 + [False]), {"row_id": "extra", "eval": {"correct": True}}]
    comparison = headline.compare_metric(spec, baseline, candidate)
    # b = 1 (only the baseline passes), c = 9: two-sided exact binomial p = 2 * (1 + 10) / 1024 = 22/1024.
    assert comparison.test == "McNemar exact" and comparison.discordant == (1, 9)
    assert comparison.p_value == pytest.approx(22 / 1024) and comparison.verdict == stats.BETTER
    assert comparison.rows == 20  # the candidate's extra row has no baseline to pair with


def test_scores_compare_with_a_paired_bootstrap_and_results_serialise() -> None:
    spec = headline.parse_specs({"relevance": "relevance"}, "m")[0]
    base, cand = rows([3, 3, 4, 2, 3, 3, 4, 3] * 3, "relevance"), rows([4, 4, 5, 3, 4, 4, 5, 4] * 3, "relevance")
    results = headline.headline([spec], {"v1": base, "v2": cand}, baseline="v1")
    assert results["v1"]["relevance"].comparison is None
    out = results["v2"]["relevance"].as_dict()
    assert out["delta"] == 1.0 and out["verdict"] == stats.BETTER and out["test"] == "paired bootstrap"
    assert out["p_value"] < 0.001 and out["ci_low"] <= out["value"] == 4.125 <= out["ci_high"]
    assert "+1.000 vs baseline" in headline.describe(results["v2"]["relevance"])


def test_variant_plan_runs_the_baseline_and_the_selected_variant() -> None:
    use_case = {"variants": {"v1": {}, "v2": {}}, "variant": "v2", "baseline": "v1"}
    assert variants.plan("x", use_case).names == ("v1", "v2")
    assert variants.plan("x", {**use_case, "variant": "v1"}).names == ("v1",)
    fallback = variants.plan("x", {**use_case, "variant": "v3"}, "v3")  # a use case without the global variant
    assert fallback.names == ("v1",) and fallback.fell_back and fallback.requested == "v3"
    assert variants.plan("x", {"variants": {"a": {}, "b": {}}, "variant": "b"}).baseline == "a"  # first declared
    with pytest.raises(variants.VariantError, match=r"use_cases\.x\.baseline: 'v9' is not one of its variants"):
        variants.plan("x", {**use_case, "baseline": "v9"})
