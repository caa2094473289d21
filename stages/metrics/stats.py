"""Statistics for small, noisy evaluations: confidence intervals and paired variant comparisons.

Every resampling is seeded, so a rerun on the same rows gives the same interval and the same verdict.
Comparisons are paired (the same rows under both variants), which is what makes small datasets usable:
a paired bootstrap for continuous scores, McNemar's exact test for pass/fail outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no significant difference"
Verdict = Literal["better", "worse", "no significant difference"]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float = 0.95

    def as_dict(self) -> dict[str, float]:
        return {"value": round(self.estimate, 4), "ci_low": round(self.low, 4), "ci_high": round(self.high, 4)}


@dataclass(frozen=True)
class Comparison:
    """A candidate against a baseline on the same rows: effect (candidate - baseline), p-value and verdict."""

    test: str
    effect: float
    p_value: float
    verdict: Verdict
    rows: int
    interval: Interval | None = None  # the effect's CI (paired bootstrap only)
    discordant: tuple[int, int] | None = None  # McNemar: (baseline-only passes, candidate-only passes)


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Interval:
    """A seeded BCa bootstrap CI of the mean (degenerate samples get a zero-width interval at their value)."""
    from scipy import stats

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_ci: no values")
    mean = float(data.mean())
    if data.size == 1 or np.all(data == data[0]):
        return Interval(mean, mean, mean, confidence)
    result = stats.bootstrap(
        (data,), np.mean, confidence_level=confidence, n_resamples=resamples, method="BCa", rng=seed
    )
    low, high = result.confidence_interval
    return Interval(mean, float(low), float(high), confidence)


def paired_bootstrap(
    baseline: Sequence[float],
    candidate: Sequence[float],
    alpha: float = 0.05,
    resamples: int = 5000,
    seed: int = 0,
) -> Comparison:
    """Compare mean scores on the same rows by resampling rows; higher scores are better.

    The p-value is two-sided: twice the share of resampled mean differences on the far side of zero.
    """
    base, cand = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if base.shape != cand.shape or base.size == 0:
        raise ValueError(f"paired_bootstrap: need the same non-zero number of rows, got {base.size} and {cand.size}")
    differences = cand - base
    effect = float(differences.mean())
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, differences.size, size=(resamples, differences.size))
    means = differences[indices].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    if np.all(differences == 0):
        p_value = 1.0
    else:
        p_value = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    verdict = _verdict(effect, p_value, alpha)
    interval = Interval(effect, float(low), float(high), 1 - alpha)
    return Comparison("paired bootstrap", effect, p_value, verdict, int(base.size), interval=interval)


def mcnemar_exact(baseline: Sequence[bool], candidate: Sequence[bool], alpha: float = 0.05) -> Comparison:
    """McNemar's exact test on paired pass/fail outcomes; the effect is the change in pass rate.

    Only discordant rows count: b rows pass only under the baseline, c only under the candidate; under no
    difference c ~ Binomial(b + c, 1/2), and the p-value is the exact two-sided binomial test.
    """
    from scipy import stats

    if len(baseline) != len(candidate) or not baseline:
        raise ValueError(
            f"mcnemar_exact: need the same non-zero number of rows, got {len(baseline)} and {len(candidate)}"
        )
    b = sum(1 for old, new in zip(baseline, candidate, strict=True) if old and not new)
    c = sum(1 for old, new in zip(baseline, candidate, strict=True) if new and not old)
    p_value = 1.0 if b + c == 0 else float(stats.binomtest(c, b + c, 0.5).pvalue)
    effect = (c - b) / len(baseline)
    return Comparison(
        "McNemar exact", effect, p_value, _verdict(effect, p_value, alpha), len(baseline), discordant=(b, c)
    )


def _verdict(effect: float, p_value: float, alpha: float) -> Verdict:
    if p_value >= alpha or effect == 0:
        return NO_DIFFERENCE
    return BETTER if effect > 0 else WORSE
