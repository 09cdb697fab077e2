"""Robust aggregates over seeds: a bootstrap interval of an arm's mean, and the probability of improvement.

Neither assumes normal seeds, but both need enough of them: below MIN_SEEDS a bootstrap has too few distinct
resamples to mean anything (3 seeds give 10), so both return None there. Both use a fixed seed for the resampling,
so a report is the same every time it is built.

- `bootstrap_interval`: the BCa interval of the mean (Efron 1987, "Better bootstrap confidence intervals", JASA 82;
  scipy.stats.bootstrap), or the percentile one. With few seeds it is narrower than the Student-t interval, which
  is exact for normal seeds: read it as a check on the t interval when the seeds look skewed, not as a replacement.
- `probability_of_improvement`: P(X > Y), X an arm's score on a random seed and Y the baseline's on another,
  estimated over all pairs of their runs with ties counting half (the Mann–Whitney statistic U / (n_x·n_y)), as
  rliable does (Agarwal et al. 2021, "Deep reinforcement learning at the edge of the statistical precipice",
  NeurIPS), with a percentile bootstrap interval that, like rliable's, resamples each arm's runs independently.
  The arm and the baseline ran the same seeds, and a seed that is good for one is usually good for the other;
  resampling them independently ignores that, which widens the interval (conservative). Resampling the seeds
  together instead would be biased: a resample that repeats a seed counts its own pair (arm and baseline on the
  same seed, where the arm wins more often when it is better) more than once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_SEEDS = 5
RESAMPLES = 9_999
SEED = 0


@dataclass(frozen=True)
class Improvement:
    probability: float  # P(arm > baseline) over pairs of seeds, ties half
    interval: tuple[float, float]  # percentile bootstrap interval


def bootstrap_interval(values: Sequence[float], confidence: float = 0.95, method: str = "BCa",
                       resamples: int = RESAMPLES) -> tuple[float, float] | None:
    """Bootstrap interval of the mean over seeds ("BCa" or "percentile"); None below MIN_SEEDS values."""
    x = np.asarray(values, dtype=float)
    if len(x) < MIN_SEEDS:
        return None
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])  # every resample has the same mean
    result = stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=confidence, method=method,
                             rng=np.random.default_rng(SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def probability_of_improvement(arm: Sequence[float], baseline: Sequence[float], confidence: float = 0.95,
                               higher_is_better: bool = True, resamples: int = RESAMPLES) -> Improvement | None:
    """P(arm > baseline) (< where lower is better) over pairs of runs, with its interval; None below MIN_SEEDS
    seeds in either."""
    x, y = np.asarray(arm, dtype=float), np.asarray(baseline, dtype=float)
    if min(len(x), len(y)) < MIN_SEEDS:
        return None
    if not higher_is_better:
        x, y = -x, -y
    estimate = float(_improvement(x, y, axis=-1))
    result = stats.bootstrap((x, y), _improvement, n_resamples=resamples, vectorized=True,
                             confidence_level=confidence, method="percentile", batch=1_000,
                             rng=np.random.default_rng(SEED))
    return Improvement(estimate, (float(result.confidence_interval.low), float(result.confidence_interval.high)))


def _improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """U / (n_x·n_y) along `axis`: the share of pairs (i, j) with x_i > y_j, ties counting half."""
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    above = (x[..., :, None] > y[..., None, :]).mean(axis=(-2, -1))
    tied = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    return above + tied / 2
