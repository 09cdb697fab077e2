"""The statistics a comparison table needs: confidence intervals, paired differences, Holm's correction.

Every arm runs the same seeds, so an arm is compared with the baseline seed by seed (a paired
t-test on the per-seed differences), which removes the seed-to-seed variation both share.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05


def mean_interval(values: pd.Series, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t confidence interval of the mean; (nan, nan) with fewer than two values."""
    values = values.dropna()
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return values.mean() - half, values.mean() + half


def paired_difference(arm: pd.Series, baseline: pd.Series) -> tuple[float, float, int]:
    """Mean of arm − baseline over the seeds both have, the paired t-test's two-sided p-value, and the pairs.

    Both series are indexed by seed. The p-value is nan with fewer than two pairs, and when every
    difference is the same (the test is undefined: no spread to judge it against).
    """
    common = arm.dropna().index.intersection(baseline.dropna().index)
    differences = (arm[common] - baseline[common]).astype(float)
    n = len(differences)
    if n == 0:
        return math.nan, math.nan, 0
    if n < 2 or np.isclose(differences.std(ddof=1), 0.0):
        return float(differences.mean()), math.nan, n
    return float(differences.mean()), float(stats.ttest_rel(arm[common], baseline[common]).pvalue), n


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down), nan left as nan; controls the family-wise error rate."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
