"""The robust aggregates: a bootstrap interval of the mean and the probability of improvement (rliable's P(X > Y))."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ablate.report._robust import MIN_SEEDS, bootstrap_interval, probability_of_improvement


def test_the_bootstrap_interval_is_deterministic_and_needs_five_seeds():
    values = np.random.default_rng(1).normal(97.0, 0.2, 8)
    interval = bootstrap_interval(values)
    assert interval == bootstrap_interval(values), "the same seeds give the same interval every time"
    assert interval[0] < values.mean() < interval[1]
    assert bootstrap_interval(values[: MIN_SEEDS - 1]) is None
    assert bootstrap_interval([97.0] * 6) == (97.0, 97.0)


def test_the_bootstrap_interval_covers_the_mean_about_as_often_as_it_says():
    """Measured on skewed (exponential) seeds, n = 10: bootstrap intervals under-cover with few seeds; both methods
    are printed and held to ≥ 0.85."""
    N, n = 300, 10
    samples = np.random.default_rng(2).exponential(1.0, (N, n))
    for method in ("BCa", "percentile"):
        hits = [lo < 1.0 < hi for lo, hi in (bootstrap_interval(s, method=method, resamples=2_000) for s in samples)]
        coverage = float(np.mean(hits))
        print(f"\ncoverage of the 95% {method} interval, exponential seeds, n = {n}: {coverage:.3f} (N = {N})")
        assert coverage >= 0.85, f"{method} covers {coverage:.3f}"


def test_the_probability_of_improvement_counts_pairs_with_ties_as_half():
    arm = np.array([0.98, 0.97, 0.99, 0.975, 0.985])
    baseline = np.array([0.97, 0.97, 0.96, 0.98, 0.975])
    result = probability_of_improvement(arm, baseline)
    expected = stats.mannwhitneyu(arm, baseline).statistic / 25  # U counts ties as half
    assert result.probability == pytest.approx(expected)
    assert result.interval[0] <= result.probability <= result.interval[1]
    assert probability_of_improvement(arm, baseline, higher_is_better=False).probability == pytest.approx(1 - expected)
    assert probability_of_improvement(arm + 1, baseline).interval == (1.0, 1.0)  # every pair improves
    assert probability_of_improvement(arm, arm).probability == 0.5
    assert probability_of_improvement(arm[:4], baseline[:4]) is None
