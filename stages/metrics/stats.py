"""Statistics for small, noisy evaluations: confidence intervals and paired variant comparisons.

Every resampling is seeded, so a rerun on the same rows gives the same interval and the same verdict.
Comparisons are paired (the same rows under both variants), which is what makes small datasets usable:
a paired bootstrap for continuous scores, McNemar's exact test for pass/fail outcomes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
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
    p_adjusted: float | None = None  # after a multiple-comparison adjustment (`adjust`); the verdict follows it
    adjustment: str = ""  # which, e.g. "Benjamini-Hochberg over 6"


# A statistic of a table of rows (one row per dataset row, one column per per-row value), e.g. a ratio of sums.
RowStatistic = Callable[[np.ndarray], float]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    statistic: RowStatistic | None = None,
) -> Interval:
    """A seeded BCa bootstrap CI of the mean of `values`, or of `statistic` over a table of rows (resampling rows).

    Degenerate samples (one row, or all rows alike) get a zero-width interval at their value.
    """
    from scipy import stats

    data = np.asarray(values, dtype=float)
    if data.shape[0] == 0:
        raise ValueError("bootstrap_ci: no values")
    measure = statistic or (lambda table: float(table.mean()))
    estimate = float(measure(data))
    if data.shape[0] == 1 or np.all(data == data[0]):
        return Interval(estimate, estimate, estimate, confidence)
    if statistic is None:
        sample, function, vectorized = (data,), np.mean, True
    else:
        sample, function, vectorized = (np.arange(data.shape[0]),), lambda rows: statistic(data[rows]), False
    with warnings.catch_warnings():  # a degenerate BCa interval is handled below
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            sample, function, confidence_level=confidence, n_resamples=resamples, method="BCa", rng=seed,
            vectorized=vectorized,
        )  # fmt: skip
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):  # BCa is undefined for some near-degenerate samples
        low, high = np.quantile([function(rows) for rows in _resampled_rows(data.shape[0], resamples, seed)],
                                [(1 - confidence) / 2, (1 + confidence) / 2])  # fmt: skip
    return Interval(estimate, float(low), float(high), confidence)


def _resampled_rows(rows: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, rows, size=(resamples, rows))


def _bootstrap_comparison(
    test: str, effect: float, deltas: np.ndarray, unchanged: bool, alpha: float, rows: int
) -> Comparison:
    """The verdict from resampled differences: their (1 - alpha) interval and a two-sided p-value, twice the
    share on the far side of zero (1 when nothing changed)."""
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    p_value = 1.0 if unchanged else min(1.0, 2 * min(float(np.mean(deltas <= 0)), float(np.mean(deltas >= 0))))
    interval = Interval(effect, float(low), float(high), 1 - alpha)
    return Comparison(test, effect, p_value, _verdict(effect, p_value, alpha), rows, interval=interval)


def paired_bootstrap(
    baseline: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    alpha: float = 0.05,
    resamples: int = 5000,
    seed: int = 0,
    statistic: RowStatistic | None = None,
) -> Comparison:
    """Compare two variants on the same rows by resampling rows; higher is better.

    Compares mean scores, or `statistic` over tables of rows (row i of both tables is the same dataset row).
    The p-value is two-sided: twice the share of resampled differences on the far side of zero.
    """
    base, cand = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if base.shape != cand.shape or base.shape[0] == 0:
        raise ValueError(
            f"paired_bootstrap: need the same non-zero number of rows, got {base.shape[0]} and {cand.shape[0]}"
        )
    indices = _resampled_rows(base.shape[0], resamples, seed)
    if statistic is None:
        differences = cand - base
        effect = float(differences.mean())
        deltas = differences[indices].mean(axis=1)
        unchanged = bool(np.all(differences == 0))
    else:
        effect = float(statistic(cand) - statistic(base))
        deltas = np.array([statistic(cand[rows]) - statistic(base[rows]) for rows in indices])
        unchanged = bool(np.all(cand == base))
    return _bootstrap_comparison("paired bootstrap", effect, deltas, unchanged, alpha, int(base.shape[0]))


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


ADJUSTMENTS = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg"}


def adjust(comparisons: Sequence[Comparison], method: str, alpha: float = 0.05) -> list[Comparison]:
    """The comparisons of one family with adjusted p-values (statsmodels `multipletests`: "holm" controls the
    family-wise error, "fdr_bh" the false discovery rate) and verdicts that follow them."""
    from dataclasses import replace

    from statsmodels.stats.multitest import multipletests

    if method not in ADJUSTMENTS:
        raise ValueError(f"adjust: method must be one of {', '.join(ADJUSTMENTS)}, got {method!r}")
    if not comparisons:
        return []
    adjusted = multipletests([c.p_value for c in comparisons], alpha=alpha, method=method)[1]
    label = f"{ADJUSTMENTS[method]} over {len(comparisons)}"
    return [
        replace(c, p_adjusted=float(p), adjustment=label, verdict=_verdict(c.effect, float(p), alpha))
        for c, p in zip(comparisons, adjusted, strict=True)
    ]


def fisher_exact(baseline: Sequence[bool], candidate: Sequence[bool], alpha: float = 0.05) -> Comparison:
    """Fisher's exact test on pass/fail outcomes of two independent samples (e.g. the requests two deployments
    served); the effect is the difference in pass rate (candidate - baseline)."""
    from scipy import stats

    if not baseline or not candidate:
        raise ValueError(f"fisher_exact: need rows in both samples, got {len(baseline)} and {len(candidate)}")
    base_pass, cand_pass = sum(map(bool, baseline)), sum(map(bool, candidate))
    table = [[cand_pass, len(candidate) - cand_pass], [base_pass, len(baseline) - base_pass]]
    p_value = float(stats.fisher_exact(table).pvalue)
    effect = cand_pass / len(candidate) - base_pass / len(baseline)
    return Comparison("Fisher exact", effect, p_value, _verdict(effect, p_value, alpha), len(baseline) + len(candidate))


def unpaired_bootstrap(
    baseline: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    alpha: float = 0.05,
    resamples: int = 5000,
    seed: int = 0,
    statistic: RowStatistic | None = None,
) -> Comparison:
    """Compare two independent samples by resampling each on its own; higher is better.

    Compares mean scores, or `statistic` over tables of rows. Two-sided p-value as in `paired_bootstrap`.
    """
    base, cand = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if base.shape[0] == 0 or cand.shape[0] == 0:
        raise ValueError(f"unpaired_bootstrap: need rows in both samples, got {base.shape[0]} and {cand.shape[0]}")
    measure = statistic or (lambda table: float(table.mean()))
    effect = float(measure(cand) - measure(base))
    rng = np.random.default_rng(seed)
    base_rows = rng.integers(0, base.shape[0], size=(resamples, base.shape[0]))
    cand_rows = rng.integers(0, cand.shape[0], size=(resamples, cand.shape[0]))
    if statistic is None:
        deltas = cand[cand_rows].mean(axis=1) - base[base_rows].mean(axis=1)
    else:
        deltas = np.array([statistic(cand[c]) - statistic(base[b]) for b, c in zip(base_rows, cand_rows, strict=True)])
    rows = int(base.shape[0] + cand.shape[0])
    return _bootstrap_comparison("unpaired bootstrap", effect, deltas, bool(np.all(deltas == 0)), alpha, rows)


def percentile(values: Sequence[float], percent: int) -> float | None:
    """The `percent`-th percentile, the toolkit's one definition (p50 and p95 of latencies everywhere): the smallest
    value with at least `percent`% of the values at or below it, `numpy.percentile(..., method="higher")` (exact
    integer index arithmetic, no interpolation). None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[-(-(len(ordered) - 1) * percent // 100)]
