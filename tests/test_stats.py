"""Confidence intervals and paired comparisons, checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stages.metrics import stats


def test_mcnemar_exact_matches_the_binomial_tail_by_hand() -> None:
    # 10 discordant rows: 1 passes only under the baseline, 9 only under the candidate, 10 pass under both.
    baseline = [True] * 10 + [True] + [False] * 9
    candidate = [True] * 10 + [False] + [True] * 9
    result = stats.mcnemar_exact(baseline, candidate)
    # two-sided exact p = 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * (1 + 10) / 1024
    assert result.p_value == pytest.approx(22 / 1024)
    assert result.discordant == (1, 9)
    assert result.effect == pytest.approx(8 / 20)
    assert result.verdict == stats.BETTER
    assert stats.mcnemar_exact(candidate, baseline).verdict == stats.WORSE


def test_mcnemar_small_or_balanced_differences_are_not_significant() -> None:
    five_wins = stats.mcnemar_exact([False] * 5 + [True] * 5, [True] * 10)
    assert five_wins.p_value == pytest.approx(2 / 32)  # 2 * 0.5**5 = 0.0625 > 0.05
    assert five_wins.verdict == stats.NO_DIFFERENCE
    balanced = stats.mcnemar_exact([True, False, True, False], [False, True, True, False])
    assert balanced.p_value == 1.0 and balanced.verdict == stats.NO_DIFFERENCE
    assert stats.mcnemar_exact([True, False], [True, False]).p_value == 1.0
    with pytest.raises(ValueError, match="same non-zero number of rows"):
        stats.mcnemar_exact([True], [True, False])


def test_paired_bootstrap_finds_a_consistent_gain_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    baseline = rng.uniform(0.2, 0.8, size=40)
    candidate = baseline + 0.1 + rng.normal(0, 0.02, size=40)
    result = stats.paired_bootstrap(baseline, candidate)
    assert result.effect == pytest.approx(float(np.mean(candidate - baseline)))
    assert result.verdict == stats.BETTER and result.p_value < 0.001
    assert result.interval.low < result.effect < result.interval.high and result.interval.low > 0.08
    assert stats.paired_bootstrap(baseline, candidate) == result  # same seed, same answer
    assert stats.paired_bootstrap(candidate, baseline).verdict == stats.WORSE


def test_paired_bootstrap_sees_no_difference_in_noise_or_identical_scores() -> None:
    same = stats.paired_bootstrap([0.5, 0.7, 0.1], [0.5, 0.7, 0.1])
    assert (same.effect, same.p_value, same.verdict) == (0.0, 1.0, stats.NO_DIFFERENCE)
    rng = np.random.default_rng(2)
    baseline = rng.uniform(0, 1, size=30)
    noisy = baseline + rng.normal(0, 0.2, size=30)
    assert stats.paired_bootstrap(baseline, noisy - np.mean(noisy - baseline)).verdict == stats.NO_DIFFERENCE


def test_bootstrap_ci_of_a_proportion_is_close_to_the_normal_approximation() -> None:
    values = [1.0, 0.0] * 20  # mean 0.5 over 40 rows; normal approx. half-width 1.96 * sqrt(.25 / 40) = 0.155
    interval = stats.bootstrap_ci(values)
    half_width = 1.96 * math.sqrt(0.25 / 40)
    assert interval.estimate == 0.5
    assert interval.low == pytest.approx(0.5 - half_width, abs=0.03)
    assert interval.high == pytest.approx(0.5 + half_width, abs=0.03)
    assert stats.bootstrap_ci(values) == interval  # seeded
    assert stats.bootstrap_ci([0.7] * 5).as_dict() == {"value": 0.7, "ci_low": 0.7, "ci_high": 0.7}
    with pytest.raises(ValueError, match="no values"):
        stats.bootstrap_ci([])


def test_adjustments_match_hand_computed_holm_and_benjamini_hochberg() -> None:
    """p = 0.01, 0.04, 0.03, 0.005. Holm: sorted p times 4, 3, 2, 1, kept monotone: 0.02, 0.03, 0.06, 0.06.
    BH: sorted p times 4/1, 4/2, 4/3, 4/4, kept monotone from the top: 0.02, 0.02, 0.04, 0.04."""
    from statsmodels.stats.multitest import multipletests

    comparisons = [stats.Comparison("t", -0.1, p, stats.WORSE, 10) for p in (0.01, 0.04, 0.03, 0.005)]
    holm = stats.adjust(comparisons, "holm")
    assert [c.p_adjusted for c in holm] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [c.verdict for c in holm] == [stats.WORSE, stats.NO_DIFFERENCE, stats.NO_DIFFERENCE, stats.WORSE]
    bh = stats.adjust(comparisons, "fdr_bh")
    assert [c.p_adjusted for c in bh] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert [c.p_adjusted for c in bh] == pytest.approx(
        list(multipletests([0.01, 0.04, 0.03, 0.005], method="fdr_bh")[1])
    )
    assert bh[0].adjustment == "Benjamini-Hochberg over 4" and holm[0].adjustment == "Holm over 4"
    assert [c.p_value for c in bh] == [0.01, 0.04, 0.03, 0.005]  # the raw p-values stay
    assert stats.adjust([], "holm") == []
    with pytest.raises(ValueError, match="method must be one of holm, fdr_bh"):
        stats.adjust(comparisons, "bonferroni")
