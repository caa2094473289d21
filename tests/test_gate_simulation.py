"""The gate's error rates, simulated: seeded, vectorised PRs of paired pass/fail rows (README "Quality gate").

Each simulated PR evaluates n rows under the baseline and the candidate; a share `FLIP` of the rows flips under
noise alone (half each way), and a true drop moves flips towards breaking. The gate's rule (McNemar's exact test,
FAIL on a significant drop not shown smaller than max_drop) is applied in numpy, and checked against
`gate.judge` and `stats.mcnemar_exact` on a sample of the same PRs, so the figures are the gate's own.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from stages.metrics import equivalence, power, stats
from stages.results import gate

ALPHA, MAX_DROP, FLIP, PRS = 0.05, 0.05, 0.10, 4000
NOISE = power.Paired(power.PASS_FAIL, 1, 0.0, FLIP)
ROWS = power.rows_needed(NOISE, MAX_DROP, ALPHA)  # the rows the plan asks for: 80% power at max_drop


def simulate(rows: int, drop: float, prs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(discordant rows, candidate-only passes) of `prs` PRs with a true drop `drop` in pass rate."""
    rng = np.random.default_rng(seed)
    flipped = rng.binomial(rows, FLIP, size=prs)
    return flipped, rng.binomial(flipped, (FLIP - drop) / (2 * FLIP))


def mcnemar_p(flipped: np.ndarray, gained: np.ndarray) -> np.ndarray:
    """McNemar's exact two-sided p-value of every PR (as stats.mcnemar_exact: 2 P(X <= min(c, d - c)))."""
    tail = scipy_stats.binom.cdf(np.minimum(gained, flipped - gained), flipped, 0.5)
    return np.where(flipped == 0, 1.0, np.minimum(1.0, 2 * tail))


def fails(rows: int, flipped: np.ndarray, gained: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The gate's FAIL: significant and worse, and not shown within max_drop (non-inferiority at max_drop)."""
    worse = (p < ALPHA) & (2 * gained < flipped)
    out = worse.copy()
    for i in np.flatnonzero(worse):
        summary = power.Paired(power.PASS_FAIL, rows, (2 * gained[i] - flipped[i]) / rows, flipped[i] / rows)
        out[i] = equivalence.noninferiority(summary, MAX_DROP, ALPHA).verdict != equivalence.NON_INFERIOR
    return out


def gate_verdict(rows: int, flipped: int, gained: int) -> str:
    """The gate's own verdict on one simulated PR (gate.judge on the comparison stats.mcnemar_exact makes)."""
    lost = flipped - gained
    base = [True] * lost + [False] * gained + [True] * (rows - flipped)
    cand = [False] * lost + [True] * gained + [True] * (rows - flipped)
    comparison = stats.mcnemar_exact(base, cand)
    diff = gate.MetricDiff("accuracy", 1.0, 1.0, comparison, power.paired(np.array(base, float), np.array(cand, float)))
    return gate.judge(diff, MAX_DROP, ALPHA, comparison.p_value, 1, "fail").verdict


def exact_fail_size(rows: int) -> float:
    """The exact probability that McNemar's test finds `worse` with no true change (one tail of the test)."""
    d = np.arange(rows + 1)
    k = scipy_stats.binom.ppf(ALPHA / 2, d, 0.5) - 1
    return float(np.sum(scipy_stats.binom.pmf(d, rows, FLIP) * np.where(k >= 0, scipy_stats.binom.cdf(k, d, 0.5), 0)))


def monte_carlo_error(rate: float) -> float:
    return float(np.sqrt(rate * (1 - rate) / PRS))


def test_the_vectorised_rule_is_the_gates_own() -> None:
    flipped, gained = simulate(ROWS, MAX_DROP, 40, seed=1)
    p = mcnemar_p(flipped, gained)
    rule = fails(ROWS, flipped, gained, p)
    assert 0 < rule.sum() < len(rule)  # both outcomes are checked
    for d, c, pi, failed in zip(flipped[:40], gained[:40], p[:40], rule[:40], strict=True):
        lost = int(d - c)
        base, cand = [True] * lost + [False] * int(c), [False] * lost + [True] * int(c)
        assert stats.mcnemar_exact(base or [True], cand or [True]).p_value == pytest.approx(pi)
        assert (gate_verdict(ROWS, int(d), int(c)) == gate.FAIL) == failed


def test_no_true_change_fails_at_the_tests_nominal_rate() -> None:
    """2 x 4000 PRs without a change: the false failures are the exact test's one-tail size, at most alpha / 2
    (McNemar's exact test is conservative: below it on few discordant rows)."""
    for rows, seed in ((ROWS, 2), (12, 3)):
        flipped, gained = simulate(rows, 0.0, PRS, seed)
        rate = float(fails(rows, flipped, gained, mcnemar_p(flipped, gained)).mean())
        size = exact_fail_size(rows)
        assert size <= ALPHA / 2
        assert abs(rate - size) <= 4 * monte_carlo_error(size) + 1e-9


def test_a_true_drop_of_max_drop_is_caught_at_the_planned_power() -> None:
    flipped, gained = simulate(ROWS, MAX_DROP, PRS, seed=4)
    rate = float(fails(ROWS, flipped, gained, mcnemar_p(flipped, gained)).mean())
    planned = power.power(NOISE, MAX_DROP, ALPHA, rows=ROWS)
    assert planned >= 0.8
    # a FAIL also needs the drop not shown smaller than max_drop, which at the boundary holds but alpha of the time
    assert planned - ALPHA - 4 * monte_carlo_error(planned) <= rate <= planned + 4 * monte_carlo_error(planned)
    few_flipped, few_gained = simulate(12, MAX_DROP, PRS, seed=5)  # today's 12 rows: almost never caught
    assert fails(12, few_flipped, few_gained, mcnemar_p(few_flipped, few_gained)).mean() < 0.05


def test_holm_keeps_the_family_wise_rate_over_many_metrics() -> None:
    """20 unchanged (use case x metric) checks per PR: unadjusted, some check fails in many PRs; Holm keeps the
    share of PRs with any false significant result at most alpha."""
    checks, rows = 20, ROWS
    flipped, gained = simulate(rows, 0.0, PRS * checks, seed=6)
    p = mcnemar_p(flipped, gained).reshape(PRS, checks)
    raw = float((p < ALPHA).any(axis=1).mean())
    holm = (p.min(axis=1) * checks) < ALPHA  # Holm rejects anything iff its first step does
    assert float(holm.mean()) <= ALPHA + 3 * monte_carlo_error(ALPHA)
    assert raw > 3 * ALPHA  # why it is needed
    firsts = np.flatnonzero(holm)[:5].tolist() + np.flatnonzero(~holm)[:5].tolist()
    for row in p[firsts]:  # the first step is statsmodels' Holm, the gate's adjustment (stats.adjust)
        adjusted = stats_holm(row)
        assert (min(adjusted) < ALPHA) == bool(row.min() * checks < ALPHA)
        assert multipletests(row, method="holm")[1] == pytest.approx(adjusted)


def stats_holm(p: np.ndarray) -> list[float]:
    comparisons = [stats.Comparison("McNemar exact", 0.0, float(x), stats.NO_DIFFERENCE, ROWS) for x in p]
    return [c.p_adjusted for c in stats.adjust(comparisons, "holm")]  # type: ignore[misc]


SCORE_SD = 0.3  # sd of per-row score differences (e.g. ROUGE-L), above the floor the plan assumes at max_drop
SCORE_ROWS = power.rows_needed(power.Paired(power.SCORE, 1, 0.0, SCORE_SD), MAX_DROP, ALPHA)


def bootstrap_p(differences: np.ndarray) -> np.ndarray:
    """stats.paired_bootstrap's p-value for each PR's per-row differences at once: the gate resamples the same
    seeded rows for every comparison of n rows, so the resampled means are one matrix product."""
    rows = differences.shape[1]
    picks = np.random.default_rng(0).integers(0, rows, size=(5000, rows))  # stats._resampled_rows(rows, 5000, 0)
    weights = np.zeros((rows, 5000))
    np.add.at(weights, (picks, np.arange(5000)[:, None]), 1.0 / rows)
    means = differences @ weights
    return np.minimum(1.0, 2 * np.minimum((means <= 0).mean(axis=1), (means >= 0).mean(axis=1)))


def score_fails(differences: np.ndarray) -> np.ndarray:
    rows = differences.shape[1]
    out = (bootstrap_p(differences) < ALPHA) & (differences.mean(axis=1) < 0)
    for i in np.flatnonzero(out):
        summary = power.paired(np.zeros(rows), differences[i])
        out[i] = equivalence.noninferiority(summary, MAX_DROP, ALPHA).verdict != equivalence.NON_INFERIOR
    return out


def test_scores_fail_at_about_nominal_without_a_change_and_at_the_planned_power_with_one() -> None:
    """Scores: the gate's paired bootstrap, planned with the paired t's power: 4,000 PRs each way."""
    rng = np.random.default_rng(7)
    null = rng.normal(0.0, SCORE_SD, size=(PRS, SCORE_ROWS))
    for row in null[:3]:  # the matrix product is stats.paired_bootstrap
        assert stats.paired_bootstrap(np.zeros(SCORE_ROWS), row).p_value == pytest.approx(bootstrap_p(row[None])[0])
    rate = float(score_fails(null).mean())
    assert rate <= ALPHA / 2 + 4 * monte_carlo_error(ALPHA / 2)
    dropped = rng.normal(-MAX_DROP, SCORE_SD, size=(PRS, SCORE_ROWS))
    caught = float(score_fails(dropped).mean())
    planned = power.power(power.Paired(power.SCORE, SCORE_ROWS, 0.0, SCORE_SD), MAX_DROP, ALPHA)
    assert planned >= 0.8 and abs(caught - planned) <= ALPHA + 4 * monte_carlo_error(planned)
