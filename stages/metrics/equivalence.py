"""Is it the same? Paired equivalence (TOST) and non-inferiority tests on a `power.Paired` summary.

For refactors, model swaps and engine migrations: `tost` asks whether the change (candidate - baseline) lies
within +-margin, `noninferiority` whether the candidate is no worse than the baseline by margin or more. Both are
one-sided tests at `alpha` against the margin's boundary, with the per-row variance there never below what a
change of that size needs (`Paired.variance_at`): identical outputs on 12 rows do not prove equivalence.
Scores use the paired t (`statsmodels.stats.weightstats.ttost_paired` gives the same p-values when the observed
variance is above that floor); pass/fail outcomes a normal test on the paired difference in pass rate.

Verdicts: equivalent (or non-inferior) when the test rejects; not equivalent (inferior) when the change is
significantly beyond the margin; inconclusive otherwise, with the rows a true change of 0 would need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from stages.metrics import power
from stages.metrics.power import PASS_FAIL, Paired

EQUIVALENT, NOT_EQUIVALENT, INCONCLUSIVE = "equivalent", "not equivalent", "inconclusive"
NON_INFERIOR, INFERIOR = "non-inferior", "inferior"
Verdict = Literal["equivalent", "not equivalent", "non-inferior", "inferior", "inconclusive"]


@dataclass(frozen=True)
class Equivalence:
    """The outcome of `tost` or `noninferiority`. `p_value`: the test's (the larger of TOST's two)."""

    test: str
    verdict: Verdict
    effect: float
    margin: float
    p_value: float
    rows: int
    rows_needed: int | None  # for 80% power at a true change of 0 (None: more than power.MAX_ROWS)


def _p_below(summary: Paired, bound: float) -> float:
    """One-sided p of H0: true change >= bound, against change < bound (`_p_above` mirrored)."""
    return _p_above(Paired(summary.kind, summary.rows, -summary.effect, summary.spread, summary.scale), -bound)


def _restricted_variance(summary: Paired, bound: float) -> float:
    """Pass/fail: the per-row variance of the differences at the maximum-likelihood cell probabilities with the
    change fixed at `bound` (the score test of Nam and Tango); with no flipped row it is |bound| - bound**2."""
    n = summary.rows
    b = n * (summary.spread - summary.effect) / 2  # baseline-only passes
    c = n * (summary.spread + summary.effect) / 2  # candidate-only passes
    # d/dx log-likelihood = 0 for x = P(baseline-only pass), P(candidate-only) = x + bound: 2n x^2 - B x - C = 0
    big_b = (b + c) * (1 - bound) - 2 * bound * (n - c)
    big_c = b * bound * (1 - bound)
    low, high = max(0.0, -bound), (1 - bound) / 2
    roots = np.roots([2 * n, -big_b, -big_c])
    real = [float(r.real) for r in roots if abs(r.imag) < 1e-12 and low - 1e-12 <= r.real <= high + 1e-12]
    x = real[0] if real else low
    return max(2 * x + bound - bound**2, 0.0)


def _p_above(summary: Paired, bound: float) -> float:
    """One-sided p of H0: true change <= bound, against change > bound."""
    from scipy import stats

    variance = _restricted_variance(summary, bound) if summary.kind == PASS_FAIL else summary.variance_at(bound)
    if variance <= 0:
        return 0.0 if summary.effect > bound else 1.0
    statistic = (summary.effect - bound) / math.sqrt(variance / summary.rows)
    if summary.kind == PASS_FAIL:
        return float(stats.norm.sf(statistic))
    return float(stats.t.sf(statistic, df=max(summary.rows - 1, 1)))


def _rows(summary: Paired, margin: float, alpha: float, target: float, tails: int) -> int | None:
    """Rows for power `target` at a true change of 0 (normal approximation; TOST: both tails must reject)."""
    from scipy import stats

    variance = summary.variance_at(margin)
    beta = (1 - target) / tails
    z = stats.norm.isf(alpha) + stats.norm.isf(beta)
    rows = math.ceil(variance * (z / margin) ** 2) if variance > 0 else 2
    return max(rows, 2) if rows <= power.MAX_ROWS else None


def noninferiority(summary: Paired, margin: float, alpha: float = 0.05, target: float = power.POWER) -> Equivalence:
    """Whether the candidate is worse than the baseline by less than `margin` (one-sided test at `alpha`)."""
    if margin <= 0:
        raise ValueError(f"noninferiority: margin must be > 0, got {margin}")
    p_value = _p_above(summary, -margin)
    if p_value < alpha:
        verdict: Verdict = NON_INFERIOR
    elif _p_below(summary, -margin) < alpha:
        verdict = INFERIOR
    else:
        verdict = INCONCLUSIVE
    needed = _rows(summary, margin, alpha, target, 1)
    return Equivalence("non-inferiority", verdict, summary.effect, margin, p_value, summary.rows, needed)


def tost(summary: Paired, margin: float, alpha: float = 0.05, target: float = power.POWER) -> Equivalence:
    """Two one-sided tests at `alpha`: equivalent when the change is shown within +-`margin`."""
    if margin <= 0:
        raise ValueError(f"tost: margin must be > 0, got {margin}")
    p_value = max(_p_above(summary, -margin), _p_below(summary, margin))
    if p_value < alpha:
        verdict: Verdict = EQUIVALENT
    elif _p_below(summary, -margin) < alpha or _p_above(summary, margin) < alpha:
        verdict = NOT_EQUIVALENT
    else:
        verdict = INCONCLUSIVE
    needed = _rows(summary, margin, alpha, target, 2)
    return Equivalence("TOST", verdict, summary.effect, margin, p_value, summary.rows, needed)
