"""What a paired comparison can see: its power, its minimum detectable effect (MDE) and the rows it needs.

A comparison is summarised by `Paired`: its rows, its effect (candidate - baseline) and its noise, the share of
discordant rows for pass/fail outcomes (McNemar) or the standard deviation of the per-row differences for
scores (paired bootstrap / paired t). A drop of `d` is planned as concentrated on the rows it breaks, each losing
the whole `scale`: at least a share `d / scale` of the rows must change, so the noise assumed at a drop is never
below that (`Paired.variance_at`). With no flipped row (identical outputs) the MDE is thus the most optimistic
one the rows allow, never zero.

Pass/fail power is exact for the two-sided exact McNemar test the gate runs (`stats.mcnemar_exact`); score power
is the paired t's (statsmodels `TTestPower`), standing in for the paired bootstrap. "Detect" means a significant
result in the drop's direction, so the one tail of a two-sided test at `alpha`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from stages.metrics import stats

PASS_FAIL, SCORE = "pass/fail", "score"
Kind = Literal["pass/fail", "score"]
POWER = 0.8
MAX_ROWS = 100_000  # rows_needed gives up above this


@dataclass(frozen=True)
class Paired:
    """A paired comparison's summary: rows, effect (candidate - baseline) and noise.

    `spread`: the share of discordant rows (pass/fail) or the sd of per-row differences (score).
    `scale`: the most a row's value can drop by (1 for rates; the observed range for scores on their own scale).
    """

    kind: Kind
    rows: int
    effect: float
    spread: float
    scale: float = 1.0

    def variance_at(self, drop: float) -> float:
        """The per-row variance of the differences assumed when the true change is `-drop` (see module doc)."""
        drop = abs(drop)
        if self.kind == PASS_FAIL:
            return max(self.spread, drop) - drop**2
        return max(self.spread**2, drop * max(self.scale - drop, 0.0))


def paired(baseline: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray) -> Paired:
    """The summary of per-row values of the same rows under two revisions (0/1 values: pass/fail)."""
    base, cand = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if base.shape != cand.shape or base.ndim != 1 or base.shape[0] == 0:
        raise ValueError(f"paired: need the same non-zero number of rows, got {base.shape} and {cand.shape}")
    n = int(base.shape[0])
    diff = cand - base
    if np.isin(base, (0.0, 1.0)).all() and np.isin(cand, (0.0, 1.0)).all():
        return Paired(PASS_FAIL, n, float(diff.mean()), float(np.mean(diff != 0)))
    values = np.concatenate([base, cand])
    scale = 1.0 if values.min() >= 0 and values.max() <= 1 else max(float(values.max() - values.min()), 1.0)
    spread = float(diff.std(ddof=1)) if n > 1 else 0.0
    return Paired(SCORE, n, float(diff.mean()), spread, scale)


def table_summary(
    kind: str, base: np.ndarray, cand: np.ndarray, comparison: stats.Comparison | None = None
) -> Paired | None:
    """The summary of a headline metric's per-row tables on the same rows (`kind` "mean", "ratio" or "f1"): from
    the values for a mean; for a ratio or F1, the paired bootstrap's standard error (`comparison`'s interval)
    scaled to one row (identical tables: no spread; None without rows or a comparison)."""
    if not len(base):
        return None
    if kind == "mean":
        return paired(base[:, 0], cand[:, 0])
    if comparison is None or comparison.interval is None:
        return Paired(SCORE, len(base), 0.0, 0.0) if bool(np.all(base == cand)) else None
    interval = comparison.interval
    z = NormalDist().inv_cdf(1 - (1 - interval.confidence) / 2)
    sd = (interval.high - interval.low) / (2 * z) * math.sqrt(comparison.rows)
    return Paired(SCORE, comparison.rows, comparison.effect, float(sd))


def _mcnemar_power(rows: int, drop: float, discordant: float, alpha: float) -> float:
    """Exact probability that McNemar's exact two-sided test at `alpha` finds `worse` on `rows` rows."""
    from scipy import stats

    if drop <= 0 or discordant <= 0:
        return 0.0
    d = np.arange(rows + 1)
    # the largest c (candidate-only passes) with a two-sided p = 2 * P(X <= c) < alpha, X ~ Binomial(d, 1/2)
    k = stats.binom.ppf(alpha / 2, d, 0.5) - 1
    q = max((discordant - drop) / (2 * discordant), 0.0)  # P(a discordant row is a candidate-only pass)
    reject = np.where(k >= 0, stats.binom.cdf(k, d, q), 0.0)
    return float(np.sum(stats.binom.pmf(d, rows, discordant) * reject))


def _t_power(rows: int, drop: float, sd: float, alpha: float) -> float:
    from statsmodels.stats.power import TTestPower

    if rows < 2 or drop <= 0:
        return 0.0
    if sd <= 0:
        return 1.0
    return float(TTestPower().power(effect_size=drop / sd, nobs=rows, alpha=alpha / 2, alternative="larger"))


def power(summary: Paired, drop: float, alpha: float = 0.05, rows: int | None = None) -> float:
    """The probability that the comparison finds a true drop of `drop` significant (`worse`) at `alpha`, on
    `rows` rows (default: the summary's)."""
    n = summary.rows if rows is None else rows
    variance = summary.variance_at(drop)
    if summary.kind == PASS_FAIL:
        return _mcnemar_power(n, drop, variance + drop**2, alpha)
    return _t_power(n, drop, math.sqrt(variance), alpha)


def mde(summary: Paired, alpha: float = 0.05, target: float = POWER, rows: int | None = None) -> float | None:
    """The smallest drop detected with probability `target` (None: not even a drop of the whole scale)."""
    high = summary.scale
    if power(summary, high, alpha, rows) < target:
        return None
    low = 0.0
    for _ in range(25):
        middle = (low + high) / 2
        low, high = (low, middle) if power(summary, middle, alpha, rows) >= target else (middle, high)
    return high


def rows_needed(summary: Paired, drop: float, alpha: float = 0.05, target: float = POWER) -> int | None:
    """The fewest rows (found by bisection; exact power saw-tooths a little in the rows) that detect `drop` with
    probability `target`, keeping the summary's noise (None: more than MAX_ROWS)."""
    if drop <= 0:
        return None
    low, high = 1, 2
    while power(summary, drop, alpha, high) < target:  # doubling, then bisection: each power costs O(rows)
        if high >= MAX_ROWS:
            return None
        low, high = high, min(2 * high, MAX_ROWS)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if power(summary, drop, alpha, middle) >= target else (middle, high)
    return high


def power_curve(summary: Paired, drops: Sequence[float], alpha: float = 0.05) -> list[float]:
    """The probability of detection at each of `drops` (the report's power curve)."""
    return [power(summary, float(drop), alpha) for drop in drops]
