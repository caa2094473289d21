"""Power, minimum detectable effects and rows needed, checked against statsmodels, scipy, hand counts and a
seeded simulation of the exact McNemar test the gate runs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.power import TTestPower

from stages.metrics import power, stats
from stages.metrics.power import PASS_FAIL, SCORE, Paired


def test_paired_summaries_of_pass_fail_and_score_rows() -> None:
    flips = power.paired([1, 1, 0, 1, 0, 1], [1, 0, 1, 1, 0, 0])
    assert (flips.kind, flips.rows, flips.effect, flips.spread) == (PASS_FAIL, 6, pytest.approx(-1 / 6), 0.5)
    judge = power.paired([4, 5, 3], [3, 5, 4])
    assert (judge.kind, judge.scale, judge.spread) == (SCORE, 2.0, pytest.approx(1.0))
    rouge = power.paired([0.2, 0.5], [0.3, 0.5])
    assert rouge.scale == 1.0 and rouge.spread == pytest.approx(np.std([0.1, 0.0], ddof=1))
    with pytest.raises(ValueError, match="same non-zero number of rows"):
        power.paired([], [])


def test_mcnemar_power_by_hand_all_discordant_rows_broken() -> None:
    """Every row breaks (discordance 1, drop 1): 6 broken of 6 give p = 2 / 64 < 0.05, 5 of 5 give 2 / 32."""
    every_row = Paired(PASS_FAIL, 6, -1.0, 1.0)
    assert power.power(every_row, 1.0) == pytest.approx(1.0)
    assert power.power(every_row, 1.0, rows=5) == 0.0
    assert stats.mcnemar_exact([True] * 6, [False] * 6).p_value == pytest.approx(2 / 64)


def test_mcnemar_mde_with_no_flipped_row_is_where_six_breaks_become_likely() -> None:
    """Identical outputs on 12 rows: the MDE assumes the drop breaks its own share of rows and nothing else, and
    the exact test needs 6 broken rows; so the MDE d solves P(Binomial(12, d) >= 6) = 0.8."""
    identical = Paired(PASS_FAIL, 12, 0.0, 0.0)
    mde = power.mde(identical)
    assert mde is not None and scipy_stats.binom.sf(5, 12, mde) == pytest.approx(0.8, abs=1e-4)


def _simulated_mcnemar_power(rows: int, discordant: float, drop: float, runs: int, seed: int) -> float:
    """The share of simulated paired samples where stats.mcnemar_exact's verdict is `worse` (vectorised)."""
    rng = np.random.default_rng(seed)
    d = rng.binomial(rows, discordant, size=runs)
    c = rng.binomial(d, (discordant - drop) / (2 * discordant))
    p = np.minimum(1.0, 2 * scipy_stats.binom.cdf(np.minimum(c, d - c), d, 0.5))
    p = np.where(d == 0, 1.0, p)
    return float(np.mean((p < 0.05) & (c < d - c)))


@pytest.mark.parametrize(("rows", "discordant", "drop"), [(30, 0.3, 0.2), (80, 0.2, 0.1), (12, 0.6, 0.5)])
def test_exact_mcnemar_power_matches_a_simulation(rows: int, discordant: float, drop: float) -> None:
    summary = Paired(PASS_FAIL, rows, 0.0, discordant)
    runs = 20_000
    simulated = _simulated_mcnemar_power(rows, discordant, drop, runs, seed=rows)
    exact = power.power(summary, drop)
    assert abs(simulated - exact) < 4 * np.sqrt(exact * (1 - exact) / runs) + 1e-3
    # the simulation's rule is the test's: its p-value is scipy's binomtest
    assert stats.mcnemar_exact([True] * 7 + [False], [False] * 7 + [True]).p_value == pytest.approx(
        2 * scipy_stats.binom.cdf(1, 8, 0.5)
    )


def test_score_power_and_rows_are_statsmodels_paired_t() -> None:
    """Effect size 0.5 (drop 0.5, sd of differences 1): 34 rows for 80% power at alpha 0.05 (G*Power's 34)."""
    noisy = Paired(SCORE, 34, 0.0, 1.0, scale=2.0)  # the floor at 0.5, 0.5 * (2 - 0.5), is below 1
    reference = TTestPower().power(effect_size=0.5, nobs=34, alpha=0.025, alternative="larger")
    assert power.power(noisy, 0.5) == pytest.approx(reference)
    assert power.power(noisy, 0.5) == pytest.approx(0.8078, abs=0.002)  # two-sided power, less the far tail
    assert power.rows_needed(noisy, 0.5) == 34
    two_sided = TTestPower().solve_power(effect_size=0.5, alpha=0.05, power=0.8, alternative="two-sided")
    assert power.rows_needed(noisy, 0.5) == int(np.ceil(two_sided))
    mde = power.mde(noisy)
    assert mde is not None and power.power(noisy, mde) == pytest.approx(0.8, abs=1e-4)


def test_rows_needed_detect_the_drop_and_one_row_fewer_does_not_quite() -> None:
    summary = Paired(PASS_FAIL, 12, -1 / 12, 2 / 12)
    needed = power.rows_needed(summary, 0.1)
    assert needed is not None and power.power(summary, 0.1, rows=needed) >= 0.8
    assert power.power(summary, 0.1, rows=needed - 1) < 0.8 + 0.01  # exact power saw-tooths by < 1 point
    assert power.rows_needed(summary, 0.0) is None
    assert power.rows_needed(Paired(SCORE, 12, 0.0, 50.0, scale=100.0), 0.001) is None  # beyond MAX_ROWS


def test_an_undetectable_comparison_has_no_mde_and_a_falling_curve() -> None:
    assert power.mde(Paired(PASS_FAIL, 3, 0.0, 0.0)) is None  # 3 broken rows of 3: p = 0.25 at best
    curve = power.power_curve(Paired(PASS_FAIL, 40, 0.0, 0.1), [0.0, 0.1, 0.2, 0.4])
    assert curve[0] == 0.0 and curve == sorted(curve) and curve[-1] > 0.8
