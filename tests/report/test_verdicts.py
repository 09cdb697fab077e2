"""The fixed-n verdicts' error rates, measured by simulation: synthetic per-seed differences (normal, and t with 5
degrees of freedom for heavier tails), fixed RNG seeds, every rate printed (pytest -s) and in its assertion message.

A rate measured over N simulated studies is within 3·sqrt(p(1 − p)/N) of the true one with probability 0.997, so
"≤ α" is checked as ≤ α + 3 standard errors; where a procedure is exact, the rate is also checked from below."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ablate.report._stats import holm
from ablate.report._verdicts import (
    BETTER,
    EQUIVALENT,
    VERDICTS,
    WORSE,
    Verdict,
    compare,
    compare_family,
    effect_interval,
    family_codes,
    hedges_j,
    holm_adjust,
    holm_levels,
    mean_sd,
    p_values,
    power_difference,
    power_equivalence,
    seeds_to_differ,
    seeds_to_equal,
)

ALPHA = 0.05
DELTA = 1.0  # the margin; the differences' sd is 1 too unless a test says otherwise


def standard_error(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def rate(name: str, events: np.ndarray) -> float:
    measured = float(np.mean(events))
    print(f"\n{name}: {measured:.4f} (N = {events.size:,})")
    return measured


def draws(seed: int, shape: tuple[int, ...], mean: float = 0.0, tails: str = "normal") -> np.ndarray:
    rng = np.random.default_rng(seed)
    if tails == "normal":
        return mean + rng.standard_normal(shape)
    # t with 5 df scaled to sd 1 (its variance is 5/3), so the same δ/σ applies
    return mean + rng.standard_t(5, shape) / math.sqrt(5 / 3)


def differs(codes: np.ndarray) -> np.ndarray:
    return (codes == BETTER) | (codes == WORSE)


@pytest.mark.parametrize("n", [3, 10])
def test_a_null_difference_is_called_better_or_worse_at_most_at_rate_alpha(n):
    N = 40_000
    codes = family_codes(draws(1, (N, 1, n)), DELTA)[:, 0]
    measured = rate(f"type I of the verdict (better or worse | true difference 0), n = {n}", differs(codes))
    bound = 3 * standard_error(ALPHA, N)
    assert measured <= ALPHA + bound, f"type-I error {measured:.4f} > α = {ALPHA} + 3 s.e. ({bound:.4f}), n = {n}"


def test_the_difference_test_alone_is_exact_under_the_null():
    """Through the p-values, without the verdict's precedence (an equivalence can pre-empt a rejection)."""
    N = 40_000
    p = family_p(draws(2, (N, 10)))
    measured = rate("P(p ≤ α) under the null, n = 10", p <= ALPHA)
    bound = 3 * standard_error(ALPHA, N)
    assert abs(measured - ALPHA) <= bound, f"P(p ≤ α) = {measured:.4f}, not α = {ALPHA} ± {bound:.4f}"


def family_p(d: np.ndarray) -> np.ndarray:
    """The difference tests' raw p-values along the last axis."""
    return p_values(*mean_sd(d), DELTA)[0]


def test_heavier_tails_keep_the_type_one_error_near_alpha():
    """t(5) seeds: the t-test is not exact there; measured, and held to α + 3 s.e. + 0.01."""
    N = 40_000
    for n in (3, 10):
        measured = rate(f"type I, t(5) differences, n = {n}", family_p(draws(3, (N, n), tails="t5")) <= ALPHA)
        assert measured <= ALPHA + 3 * standard_error(ALPHA, N) + 0.01, f"t(5), n = {n}: type-I error {measured:.4f}"


def test_power_at_a_true_difference_of_delta_is_what_the_noncentral_t_says():
    N, n = 20_000, 10
    codes = family_codes(draws(4, (N, 1, n), mean=DELTA), DELTA)[:, 0]
    measured = rate("P(better | true difference δ = σ), n = 10", codes == BETTER)
    expected = power_difference(n, DELTA, ALPHA)
    bound = 3 * standard_error(expected, N)
    # at the margin itself the TOST passes with probability ≤ α, which would take a 'better' away
    assert expected - bound - ALPHA <= measured <= expected + bound, f"power {measured:.4f}, nct {expected:.4f}"
    assert measured > 0.75, f"power {measured:.4f} at d_z = 1 with 10 seeds"


def test_holm_over_four_comparisons_keeps_the_family_wise_error_and_no_correction_does_not():
    N, m, n = 20_000, 4, 8
    d = draws(5, (N, m, n))
    fwer = rate("FWER, Holm, m = 4, global null", differs(family_codes(d, DELTA)).any(axis=1))
    uncorrected = rate("FWER, uncorrected, m = 4", (family_p(d) <= ALPHA).any(axis=1))
    limit = ALPHA + 3 * standard_error(ALPHA, N)
    assert fwer <= limit, f"Holm's family-wise error {fwer:.4f} > {limit:.4f}"
    assert uncorrected > limit, f"the uncorrected procedure's {uncorrected:.4f} should fail the same check"


@pytest.mark.parametrize("sign", [1, -1])
def test_a_difference_of_delta_is_called_equivalent_at_most_at_rate_alpha(sign):
    N, n = 40_000, 10
    codes = family_codes(draws(6, (N, 1, n), mean=sign * DELTA), DELTA)[:, 0]
    measured = rate(f"P(equivalent | true difference {sign:+}δ), n = 10", codes == EQUIVALENT)
    bound = 3 * standard_error(ALPHA, N)
    # at the margin the TOST is exact: close to α from below (the other one-sided test almost always passes)
    assert ALPHA - bound - 0.005 <= measured <= ALPHA + bound, f"false equivalence {measured:.4f}, α = {ALPHA}"


def test_equivalence_power_at_zero_matches_the_exact_integral_and_holm_keeps_false_equivalence():
    N, n = 20_000, 10
    codes = family_codes(draws(7, (N, 1, n)), DELTA)[:, 0]
    measured = rate("P(equivalent | true difference 0), n = 10", codes == EQUIVALENT)
    expected = power_equivalence(n, 0.0, 1.0, DELTA, ALPHA)
    assert abs(measured - expected) <= 3 * standard_error(expected, N), f"{measured:.4f} vs exact {expected:.4f}"
    margins = np.array([DELTA, -DELTA, DELTA, -DELTA])[None, :, None]
    family = family_codes(draws(8, (N, 4, n)) + margins, DELTA)
    fwer = rate("P(some of 4 arms at ±δ called equivalent), Holm", (family == EQUIVALENT).any(axis=1))
    assert fwer <= ALPHA + 3 * standard_error(ALPHA, N), f"family-wise false equivalence {fwer:.4f}"


def test_the_seeds_a_decision_would_need_give_power_0_8():
    n = seeds_to_differ(0.8, ALPHA)
    assert power_difference(n, 0.8, ALPHA) >= 0.8 > power_difference(n - 1, 0.8, ALPHA)
    measured = rate(f"power at the {n} seeds advised for d_z = 0.8",
                    family_p(draws(9, (20_000, n), mean=0.8)) <= ALPHA)
    assert abs(measured - power_difference(n, 0.8, ALPHA)) <= 3 * standard_error(0.8, 20_000)
    assert seeds_to_differ(0.8, ALPHA / 4) > n  # Holm's worst-case level α/m asks for more
    k = seeds_to_equal(0.3, 1.0, DELTA, ALPHA)
    assert power_equivalence(k, 0.3, 1.0, DELTA, ALPHA) >= 0.8 > power_equivalence(k - 1, 0.3, 1.0, DELTA, ALPHA)
    assert seeds_to_differ(0.0, ALPHA) is None and seeds_to_equal(1.2, 1.0, DELTA, ALPHA) is None


def test_the_effect_size_interval_covers_the_true_d_z_at_its_level():
    N, n, true = 800, 6, 0.7
    d = draws(10, (N, n), mean=true)
    effects = d.mean(axis=1) / d.std(axis=1, ddof=1)
    intervals = np.array([effect_interval(e, n, 0.95) for e in effects])
    measured = rate("coverage of the 95% d_z interval, n = 6", (intervals[:, 0] < true) & (true < intervals[:, 1]))
    assert abs(measured - 0.95) <= 3 * standard_error(0.95, N), f"coverage {measured:.4f}"
    assert hedges_j(9) == pytest.approx(1 - 3 / (4 * 9 - 1), abs=1e-3)


def test_compare_reads_the_verdict_and_its_numbers():
    better = compare([0.9, 1.1, 1.0, 1.2, 0.8], DELTA / 4)
    assert better.verdict == Verdict.BETTER and better.differs and better.n == 5
    assert better.interval[0] > 0 and better.effect == pytest.approx(1.0 / np.std([0.9, 1.1, 1.0, 1.2, 0.8], ddof=1))
    within = compare([0.10, 0.12, 0.09, 0.11, 0.08], DELTA)  # shown to differ from 0, but by less than δ
    assert within.verdict == Verdict.EQUIVALENT and within.differs
    loss = compare([0.9, 1.1, 1.0, 1.2, 0.8], DELTA / 4, higher_is_better=False)
    assert loss.verdict == Verdict.WORSE and loss.mean == pytest.approx(1.0)
    assert compare([0.5], DELTA).verdict == Verdict.UNDECIDED
    one = compare([0.5], DELTA)
    assert math.isnan(one.p_difference) and one.seeds_to_differ is None and one.seeds_to_equal is None
    flat = compare([0.0, 0.0, 0.0], DELTA)  # an arm that changes nothing: no spread, the tests' limits
    assert flat.verdict == Verdict.EQUIVALENT and flat.p_difference == 1.0 and flat.p_equivalence == 0.0
    assert compare([2.0, 2.0], DELTA).verdict == Verdict.BETTER
    undecided = compare([0.5, -0.2, 0.9], DELTA)
    assert undecided.verdict == Verdict.UNDECIDED and undecided.seeds_to_differ > 3
    assert compare([0.9, 1.1, 1.0], DELTA / 4, m=1000).verdict == Verdict.UNDECIDED  # Bonferroni at α/m
    with pytest.raises(ValueError, match="margin"):
        compare([1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match="seeds both"):
        compare([1.0, math.nan, 2.0], DELTA)


def test_the_family_is_the_vectorised_computation_and_holm_is_the_reports_holm():
    d = draws(11, (3, 6), mean=0.0) + np.array([[0.0], [0.8], [-2.0]])
    family = compare_family({"a": d[0], "b": d[1], "c": d[2]}, DELTA)
    codes = family_codes(d[None], DELTA)[0]
    assert [c.verdict for c in family.values()] == [VERDICTS[k] for k in codes]
    assert family["c"].verdict == Verdict.WORSE and all(c.m == 3 for c in family.values())
    p = np.random.default_rng(12).uniform(size=(50, 5))
    p[::7, 2] = np.nan
    for row in p:
        assert np.allclose(holm_adjust(row), holm(list(row)), equal_nan=True)


def test_holm_levels_are_the_levels_the_step_down_tested_at():
    # sorted 0.001, 0.02, 0.03: tested at α/3, α/2, α/1; all rejected
    assert holm_levels([0.03, 0.001, 0.02], 0.05) == pytest.approx([0.05, 0.05 / 3, 0.025])
    # 0.03 fails at α/2, so the procedure stops there: 0.04 keeps α/2 (not α, at which it alone would pass)
    assert holm_levels([0.03, 0.04], 0.05) == pytest.approx([0.025, 0.025])
    assert holm_levels([float("nan"), 0.01], 0.05) == pytest.approx([0.05, 0.05])  # nan does not count in m


def test_the_decision_intervals_say_what_the_verdict_says():
    """What the verdicts figure draws is what decided: the difference interval excludes 0 exactly when the corrected
    difference test rejects, the equivalence interval lies inside ±δ exactly when the corrected TOST does."""
    rng = np.random.default_rng(30)
    delta, checked = 0.1, 0
    for _ in range(400):
        m, n = int(rng.integers(1, 6)), int(rng.integers(2, 9))
        family = {f"arm{i}": rng.normal(rng.choice([0.0, 0.05, 0.2, 1.0]), rng.uniform(0.02, 0.4), n) for i in range(m)}
        for c in compare_family(family, delta).values():
            low, high = c.decision_interval
            equiv_low, equiv_high = c.decision_equivalence_interval
            assert (c.p_difference_adjusted <= c.alpha) == (low > 0 or high < 0)
            assert (c.p_equivalence_adjusted <= c.alpha) == (-delta < equiv_low and equiv_high < delta)
            checked += 1
    assert checked > 1000
