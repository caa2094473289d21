"""Equivalence (TOST) and non-inferiority: statsmodels' paired t for scores, the restricted maximum likelihood
of the pass/fail score test checked numerically, and its size at the margin by a seeded simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from statsmodels.stats.weightstats import DescrStatsW, ttost_paired

from stages.metrics import equivalence, power
from stages.metrics.power import PASS_FAIL, Paired


def test_score_tost_and_noninferiority_are_statsmodels_paired_t() -> None:
    """Spread-out scores (sd of differences above the floor at the margin, sqrt(0.05 * 0.95)): statsmodels' p."""
    rng = np.random.default_rng(3)
    base, cand = rng.uniform(0, 1, size=60), rng.uniform(0, 1, size=60)
    summary, margin = power.paired(base, cand), 0.05
    assert summary.spread**2 > margin * (1 - margin)
    assert equivalence.tost(summary, margin).p_value == pytest.approx(ttost_paired(cand, base, -margin, margin)[0])
    one_sided = DescrStatsW(cand - base).ttest_mean(value=-margin, alternative="larger")[1]
    assert equivalence.noninferiority(summary, margin).p_value == pytest.approx(one_sided)


def test_pass_fail_restricted_discordance_is_the_likelihood_maximum() -> None:
    for rows, b, c, bound in [(30, 5, 2, -0.1), (30, 0, 0, -0.1), (12, 3, 0, 0.05), (100, 10, 20, -0.05)]:
        rest = rows - b - c
        low, high = max(0.0, -bound), (1 - bound) / 2

        def minus_log_likelihood(x: float, b: int = b, c: int = c, rest: int = rest, bound: float = bound) -> float:
            cells = np.maximum([x, x + bound, 1 - 2 * x - bound], 1e-300)
            return -float(np.dot([b, c, rest], np.log(cells)))

        x = minimize_scalar(minus_log_likelihood, bounds=(low, high), method="bounded", options={"xatol": 1e-12}).x
        summary = Paired(PASS_FAIL, rows, (c - b) / rows, (b + c) / rows)
        assert equivalence._restricted_variance(summary, bound) == pytest.approx(2 * x + bound - bound**2, abs=1e-7)


@pytest.mark.parametrize(("rows", "discordant", "margin"), [(30, 0.2, 0.1), (200, 0.1, 0.05)])
def test_pass_fail_noninferiority_keeps_its_size_at_the_margin(rows: int, discordant: float, margin: float) -> None:
    """True change exactly -margin: the test may claim non-inferiority at most alpha of the time."""
    rng = np.random.default_rng(rows)
    runs = 2000
    flipped = rng.binomial(rows, discordant, size=runs)
    gained = rng.binomial(flipped, (discordant - margin) / (2 * discordant))
    claims = sum(
        equivalence.noninferiority(Paired(PASS_FAIL, rows, (2 * c - d) / rows, d / rows), margin).verdict
        == equivalence.NON_INFERIOR
        for d, c in zip(flipped, gained, strict=True)
    )
    assert claims / runs <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / runs)


def test_identical_outputs_prove_equivalence_only_on_enough_rows() -> None:
    few = equivalence.tost(Paired(PASS_FAIL, 12, 0.0, 0.0), 0.05)
    assert (few.verdict, few.rows, few.rows_needed) == (equivalence.INCONCLUSIVE, 12, 163)
    many = equivalence.tost(Paired(PASS_FAIL, 400, 0.0, 0.0), 0.05)
    assert many.verdict == equivalence.EQUIVALENT and many.p_value < 0.001
    dropped = power.paired([1] * 30, [1] * 10 + [0] * 20)
    assert equivalence.tost(dropped, 0.1).verdict == equivalence.NOT_EQUIVALENT
    assert equivalence.noninferiority(dropped, 0.1).verdict == equivalence.INFERIOR
    gained = power.paired([1] * 10 + [0] * 20, [1] * 30)
    assert equivalence.noninferiority(gained, 0.1).verdict == equivalence.NON_INFERIOR
    assert equivalence.tost(gained, 0.1).verdict == equivalence.NOT_EQUIVALENT
    with pytest.raises(ValueError, match="margin must be > 0"):
        equivalence.tost(Paired(PASS_FAIL, 12, 0.0, 0.0), 0.0)
