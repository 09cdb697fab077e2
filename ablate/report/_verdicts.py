"""A verdict for every comparison of an arm with the baseline: better, worse, equivalent within ±δ, or undecided.

Use: `compare_family({arm: per-seed differences}, δ, α)` → {arm: Comparison} for a study's table; `compare(d, δ, α, m)`
for one comparison of m; `family_codes` is the same computation vectorised over simulated studies (tests, benchmarks).

The contract (fixed number of seeds; for seeds added adaptively read `_sequential`, whose verdicts stay valid
across looks — these do not: testing again after every new seed inflates their error rates):

Input: the paired per-seed differences d_1..d_n of one comparison (arm − baseline on the same seed, in the metric's
own units; only the seeds both finished), the margin δ > 0 in the same units (accuracy in points → δ in points), the
level α, and for a family the differences of all m arms at once. `higher_is_better=False` is for metrics such as a
loss, where a negative difference is the improvement.

The tests (Student's paired t on the differences):
- difference: the two-sided paired t-test of mean 0;
- equivalence: Schuirmann's (1987) two one-sided tests (TOST) of H0: |mean| ≥ δ, whose p-value is the larger of the
  two one-sided ones; at level α it passes exactly when the (1 − 2α) confidence interval lies inside (−δ, δ)
  (Lakens 2017, "Equivalence tests", Social Psychological and Personality Science 8(4); the region of practical
  equivalence of Benavoli et al. 2017, JMLR 18(77)).
Multiplicity: Holm's step-down over the m comparisons, once for the difference p-values and separately for the TOST
p-values (`compare` alone, seeing one comparison, uses Bonferroni α/m: Holm's level for the most significant one).

The verdict, in this order of precedence: `equivalent` when the TOST rejects — δ is by definition the smallest
difference that matters, so a difference shown to be smaller does not matter even when it is also shown to be
nonzero (the renderer can still say "better, but within ±δ": `Comparison.differs` keeps that); else `better` or
`worse` when the difference test rejects, in the direction of the mean; else `undecided`. Fewer than two seeds:
always `undecided` (no spread to judge a difference against).

Guarantees, when the differences are independent and normal with a common variance (the t-tests' assumption; the
tests in tests/report/test_verdicts.py measure them, and how they hold for t-distributed, heavier-tailed seeds):
- P(some comparison whose true mean difference is 0 is called better or worse) ≤ α (Holm 1979, any dependence
  between the comparisons, such as their shared baseline);
- P(some comparison whose true |mean difference| ≥ δ is called equivalent) ≤ α (Holm over the TOST p-values);
- a wrong direction (better when the arm is truly worse) ≤ α/2 per comparison.
The two families are separate, as Lakens recommends: the chance of a wrong verdict of either kind somewhere in one
study is ≤ 2α when some arms truly differ by 0 and others by ≥ δ; pass α/2 to bound that by α.
When every difference is the same number (no spread, e.g. an arm that changes nothing under deterministic training)
the p-values are the limits of the t-tests as the spread goes to 0: 0 or 1.

Also returned: the mean difference with its (1 − α) and (1 − 2α) Student-t intervals (unadjusted); the paired effect
size d_z = mean / sd of the differences, Hedges' bias-corrected g_z = J(n − 1)·d_z with the exact J (Hedges 1981),
and the exact (1 − α) interval of the population d_z, found by inverting the noncentral t distribution of
t = d_z·√n (Steiger & Fouladi 1997; Cumming & Finch 2001; the "exact" method of Goulet-Pelletier & Cousineau 2018,
The Quantitative Methods for Psychology 14(4), which is exact for d_z because its t really is noncentral t);
and the seeds a decision would need: the n at which the paired t-test at level α/m would detect the observed mean
difference with power 0.8 at the observed sd (noncentral t), and the n at which the TOST at α/m would show
equivalence with power 0.8 if the true difference were the observed one (exact: Owen's integral over the sample sd).
α/m is the strictest level Holm uses, so these suffice whatever the other comparisons do. They are planning guides
computed from noisy estimates — with few seeds the observed effect can be far from the true one — not a guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import integrate, optimize, special, stats

ALPHA = 0.05
POWER = 0.8
MOST_SEEDS = 100_000  # the seeds-needed search gives up (None) beyond this


class Verdict(StrEnum):
    UNDECIDED = "undecided"
    BETTER = "better"
    WORSE = "worse"
    EQUIVALENT = "equivalent"


# The integer codes of the vectorised functions (`family_codes`, `_sequential.sequential_codes`): index into this.
VERDICTS = (Verdict.UNDECIDED, Verdict.BETTER, Verdict.WORSE, Verdict.EQUIVALENT)
UNDECIDED, BETTER, WORSE, EQUIVALENT = range(4)


@dataclass(frozen=True)
class Comparison:
    verdict: Verdict
    n: int  # seeds (pairs)
    mean: float  # mean difference, arm − baseline
    interval: tuple[float, float]  # (1 − α) Student-t interval of the mean difference, unadjusted
    equivalence_interval: tuple[float, float]  # (1 − 2α) interval: inside (−δ, δ) ⇔ the unadjusted TOST passes
    # The intervals the verdict reads, at the level the correction tested this comparison at (`holm_levels`):
    # better/worse ⇔ the first excludes 0; equivalent ⇔ the second lies inside (−δ, δ). What a figure should draw.
    decision_interval: tuple[float, float]
    decision_equivalence_interval: tuple[float, float]
    p_difference: float  # two-sided paired t-test of mean 0
    p_difference_adjusted: float  # Holm's in compare_family, Bonferroni's (m·p) in compare
    p_equivalence: float  # TOST of |mean| ≥ δ
    p_equivalence_adjusted: float  # likewise, over the m TOST p-values
    effect: float  # d_z = mean / sd of the differences
    effect_g: float  # Hedges' g_z = J(n − 1)·d_z, nan below 3 seeds
    effect_interval: tuple[float, float]  # exact (1 − α) interval of the population d_z
    seeds_to_differ: int | None  # n for power 0.8 to detect the observed mean at level α/m (None: never, or unknown)
    seeds_to_equal: int | None  # n for power 0.8 to show equivalence if the observed mean were true (None: never)
    delta: float
    alpha: float
    m: int

    @property
    def differs(self) -> bool:
        """The adjusted difference test rejects (also under the verdict `equivalent`: 'better, but within ±δ')."""
        return bool(self.p_difference_adjusted <= self.alpha)


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values along the last axis; nan stays nan and does not count in m (as _stats.holm).

    Reject where the adjusted p-value ≤ α: the family-wise error rate is then ≤ α under any dependence (Holm 1979).
    """
    p = np.asarray(p_values, dtype=float)
    valid = ~np.isnan(p)
    order = np.argsort(np.where(valid, p, np.inf), axis=-1)
    ranked = np.take_along_axis(np.where(valid, p, np.inf), order, axis=-1)
    multiplier = valid.sum(axis=-1, keepdims=True) - np.arange(p.shape[-1])
    with np.errstate(invalid="ignore"):
        adjusted = np.minimum(1.0, np.maximum.accumulate(ranked * multiplier, axis=-1))
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return np.where(valid, out, np.nan)


def holm_levels(p_values: Sequence[float], alpha: float) -> list[float]:
    """The level Holm's step-down tests each p-value at, so that p ≤ its level ⇔ its adjusted p-value ≤ α.

    Sorted ascending, the k-th smallest (k = 0..m − 1) is tested at α/(m − k) while every smaller one was rejected;
    from the first that is not, the procedure stops, and it and every later one keep that first failing level (their
    p-values are no smaller, so they are not rejected either). nan p-values do not count in m and get α/m.
    """
    p = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    m = max(1, len(valid))
    levels = [alpha / m] * len(p)
    stopped_at: float | None = None
    for k, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        level = stopped_at if stopped_at is not None else alpha / (m - k)
        if stopped_at is None and p[i] > level:
            stopped_at = level
        levels[i] = level
    return levels


def mean_sd(differences: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and sample sd (ddof 1) along the last axis, and n; the sd is exactly 0 when every value is the same."""
    d = np.asarray(differences, dtype=float)
    n = d.shape[-1]
    mean = d.mean(axis=-1)
    if n < 2:
        return mean, np.full(mean.shape, np.nan), n
    sd = np.where(np.ptp(d, axis=-1) == 0, 0.0, d.std(axis=-1, ddof=1))
    return mean, sd, n


def p_values(mean: np.ndarray, sd: np.ndarray, n: int, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided p-value of mean 0 and the TOST p-value of |mean| ≥ δ (nan with n < 2; the limits when sd = 0)."""
    mean, sd = np.asarray(mean, dtype=float), np.asarray(sd, dtype=float)
    if n < 2:
        return np.full(mean.shape, np.nan), np.full(mean.shape, np.nan)
    df = n - 1
    se = sd / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_difference = 2 * special.stdtr(df, -np.abs(mean / se))
        above_minus = special.stdtr(df, -(mean + delta) / se)  # H0: mean ≤ −δ
        below_plus = special.stdtr(df, (mean - delta) / se)  # H0: mean ≥ +δ
    p_equivalence = np.maximum(above_minus, below_plus)
    flat = se == 0
    p_difference = np.where(flat, np.where(mean == 0, 1.0, 0.0), p_difference)
    p_equivalence = np.where(flat, np.where(np.abs(mean) < delta, 0.0, 1.0), p_equivalence)
    return p_difference, p_equivalence


def codes(mean: np.ndarray, p_difference: np.ndarray, p_equivalence: np.ndarray, alpha: float) -> np.ndarray:
    """The verdict codes (index into VERDICTS) from adjusted p-values, with the precedence the module docstring
    states; nan p-values (fewer than two seeds) give UNDECIDED. Better means a positive mean here."""
    equivalent = np.nan_to_num(p_equivalence, nan=1.0) <= alpha
    differs = np.nan_to_num(p_difference, nan=1.0) <= alpha
    return np.where(equivalent, EQUIVALENT,
                    np.where(differs & (mean > 0), BETTER, np.where(differs & (mean < 0), WORSE, UNDECIDED)))


def family_codes(differences: np.ndarray, delta: float, alpha: float = ALPHA) -> np.ndarray:
    """Verdict codes of a family, vectorised for simulation: differences (..., m, n) → codes (..., m), Holm over m.

    The same computation `compare_family` makes for one study (higher is better).
    """
    mean, sd, n = mean_sd(differences)
    p_difference, p_equivalence = p_values(mean, sd, n, delta)
    return codes(mean, holm_adjust(p_difference), holm_adjust(p_equivalence), alpha)


def compare(differences: Sequence[float], delta: float, alpha: float = ALPHA, m: int = 1,
            higher_is_better: bool = True) -> Comparison:
    """The verdict of one comparison among m, at Bonferroni's α/m (use `compare_family` to get Holm's)."""
    d = finite(differences)
    mean, sd, n = mean_sd(d)
    p_difference, p_equivalence = p_values(mean, sd, n, delta)
    return _comparison(d, delta, alpha, m, float(p_difference), min(1.0, m * float(p_difference)),
                       float(p_equivalence), min(1.0, m * float(p_equivalence)), higher_is_better,
                       (alpha / m, alpha / m))


def compare_family(differences: Mapping[str, Sequence[float]], delta: float, alpha: float = ALPHA,
                   higher_is_better: bool = True) -> dict[str, Comparison]:
    """The verdict of every comparison of a study (arm name → its per-seed differences from the baseline), Holm over
    the m = len(differences) comparisons for the difference tests and, separately, for the TOST."""
    arrays = {name: finite(values) for name, values in differences.items()}
    raw = [p_values(*mean_sd(d), delta) for d in arrays.values()]
    p_difference = [float(p) for p, _ in raw]
    p_equivalence = [float(p) for _, p in raw]
    holm_difference, holm_equivalence = holm_adjust(np.array(p_difference)), holm_adjust(np.array(p_equivalence))
    levels = list(zip(holm_levels(p_difference, alpha), holm_levels(p_equivalence, alpha)))
    return {name: _comparison(d, delta, alpha, len(arrays), p_difference[i], float(holm_difference[i]),
                              p_equivalence[i], float(holm_equivalence[i]), higher_is_better, levels[i])
            for i, (name, d) in enumerate(arrays.items())}


def _comparison(d: np.ndarray, delta: float, alpha: float, m: int, p_difference: float, p_difference_adjusted: float,
                p_equivalence: float, p_equivalence_adjusted: float, higher_is_better: bool,
                levels: tuple[float, float]) -> Comparison:
    """`levels`: the levels the correction tested the difference and the TOST at (the decision intervals')."""
    check_levels(delta, alpha)
    mean, sd, n = mean_sd(d)
    mean, sd = float(mean), float(sd)
    sign = 1.0 if higher_is_better else -1.0
    # Better is the improving direction: a negative difference when lower is better.
    code = int(codes(np.array(sign * mean), np.array(p_difference_adjusted), np.array(p_equivalence_adjusted), alpha))
    effect = _effect(mean, sd, n)
    return Comparison(
        verdict=VERDICTS[code], n=n, mean=mean, interval=t_interval(mean, sd, n, 1 - alpha),
        equivalence_interval=t_interval(mean, sd, n, 1 - 2 * alpha),
        decision_interval=t_interval(mean, sd, n, 1 - levels[0]),
        decision_equivalence_interval=t_interval(mean, sd, n, 1 - 2 * levels[1]),
        p_difference=p_difference, p_difference_adjusted=p_difference_adjusted, p_equivalence=p_equivalence,
        p_equivalence_adjusted=p_equivalence_adjusted, effect=effect, effect_g=effect * hedges_j(n - 1),
        effect_interval=effect_interval(effect, n, 1 - alpha),
        seeds_to_differ=seeds_to_differ(effect, alpha / m), seeds_to_equal=seeds_to_equal(mean, sd, delta, alpha / m),
        delta=delta, alpha=alpha, m=m)


def finite(differences: Sequence[float]) -> np.ndarray:
    d = np.asarray(differences, dtype=float)
    if not np.isfinite(d).all():
        raise ValueError("the differences hold nan or inf: pass only the seeds both the arm and the baseline finished")
    return d


def check_levels(delta: float, alpha: float) -> None:
    if not delta > 0:
        raise ValueError(f"the margin δ must be > 0, in the metric's units, not {delta}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"the level α must be between 0 and 0.5, not {alpha}")


def t_interval(mean: float, sd: float, n: int, confidence: float) -> tuple[float, float]:
    """Student-t interval of the mean; (nan, nan) below two seeds, the point itself when sd = 0."""
    if n < 2:
        return math.nan, math.nan
    half = float(stats.t.isf((1 - confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def _effect(mean: float, sd: float, n: int) -> float:
    if n < 2 or (sd == 0 and mean == 0):
        return math.nan
    return math.copysign(math.inf, mean) if sd == 0 else mean / sd


def hedges_j(df: int) -> float:
    """Hedges' (1981) exact small-sample correction J(df) = Γ(df/2) / (√(df/2)·Γ((df − 1)/2)); nan for df < 2."""
    if df < 2:
        return math.nan
    return math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)


def effect_interval(effect: float, n: int, confidence: float) -> tuple[float, float]:
    """Exact interval of the population d_z: the noncentralities whose noncentral t puts t = d_z·√n at the
    (1 ± confidence)/2 quantiles, over √n (nan below two seeds or with no spread)."""
    if n < 2 or not math.isfinite(effect):
        return math.nan, math.nan
    t, df, tail = effect * math.sqrt(n), n - 1, (1 - confidence) / 2
    return _noncentrality(t, df, 1 - tail) / math.sqrt(n), _noncentrality(t, df, tail) / math.sqrt(n)


def _noncentrality(t: float, df: int, probability: float) -> float:
    """The nc with P(T ≤ t) = probability for T ~ noncentral t(df, nc); that probability falls as nc grows."""
    width = 2.0 + abs(t)
    while stats.nct.cdf(t, df, t - width) < probability or stats.nct.cdf(t, df, t + width) > probability:
        width *= 2
        if width > 1e7:
            return math.nan
    try:  # scipy's noncentral t is NaN far in its tails (1 degree of freedom, |t| in the tens): no interval then
        return optimize.brentq(lambda nc: stats.nct.cdf(t, df, nc) - probability, t - width, t + width, xtol=1e-10)
    except ValueError:
        return math.nan


def power_difference(n: int, effect: float, level: float) -> float:
    """Power of the two-sided paired t-test at `level` with n seeds when the true d_z is `effect` (noncentral t)."""
    df, nc = n - 1, effect * math.sqrt(n)
    critical = stats.t.isf(level / 2, df)
    return float(stats.nct.sf(critical, df, nc) + stats.nct.cdf(-critical, df, nc))


def power_equivalence(n: int, mean: float, sd: float, delta: float, level: float) -> float:
    """Exact power of the TOST at `level` with n seeds when the differences are normal(mean, sd): the probability
    that mean ± t·s/√n lies inside (−δ, δ), integrated over the sample sd s (Owen's Q; Phillips 1990)."""
    if sd == 0:
        return float(abs(mean) < delta)
    df, root = n - 1, math.sqrt(n)
    critical = stats.t.isf(level, df)
    upper, lower = (delta - mean) * root / sd, (-delta - mean) * root / sd
    widest = df * ((upper - lower) / (2 * critical)) ** 2  # the χ² value above which the interval cannot fit

    def inside(chi2: float) -> float:
        u = critical * math.sqrt(chi2 / df)
        return (special.ndtr(upper - u) - special.ndtr(lower + u)) * stats.chi2.pdf(chi2, df)

    return float(integrate.quad(inside, 0, widest, limit=200)[0])


def seeds_to_differ(effect: float, level: float, power: float = POWER) -> int | None:
    """Smallest n ≥ 2 at which the paired t-test at `level` has `power` for the true d_z `effect` (None when the
    effect is 0, unknown, or would need more than MOST_SEEDS)."""
    if not math.isfinite(effect) or effect == 0:
        return None
    return _smallest_n(lambda n: power_difference(n, effect, level) >= power)


def seeds_to_equal(mean: float, sd: float, delta: float, level: float, power: float = POWER) -> int | None:
    """Smallest n ≥ 2 at which the TOST at `level` has `power` when the differences are normal(mean, sd) (None when
    |mean| ≥ δ, where no n can, when sd is unknown, or beyond MOST_SEEDS)."""
    if not (math.isfinite(sd) and abs(mean) < delta):
        return None
    return _smallest_n(lambda n: power_equivalence(n, mean, sd, delta, level) >= power)


def _smallest_n(enough) -> int | None:
    """The smallest n ≥ 2 where `enough(n)` holds, for a condition that, once true, stays true as n grows."""
    low, high = 1, 2  # enough(low) is taken as false
    while not enough(high):
        low, high = high, high * 2
        if high > MOST_SEEDS:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high
