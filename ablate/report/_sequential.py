"""Adaptive seeds: verdicts that stay valid when an arm gets one more seed at a time until its answer is known.

The design: every arm starts with `min_n` seeds; after each round, an arm whose comparison with the baseline is
decided stops, every undecided one gets one more seed, and none gets more than `max_n`. Testing again after every
seed with the fixed-n tests of `_verdicts` would not keep their error rates (with 3..10 seeds, naive repeated t-tests
at α = 0.05 call a null difference significant in 10.7% of studies; tests/report/test_sequential.py measures it), so
an adaptive study's verdicts are read with this module, also after its last seed.

Use: after each round, `sequential_family(differences by arm so far, δ, α, min_n, max_n)` gives each arm's
`SequentialComparison` (verdict, repeated intervals, `needs_more`: give it another seed); `budget(arms, min_n, max_n)`
the fewest and most runs a plan can take; `boundaries(min_n, max_n, α)` the critical values themselves;
`sequential_codes` runs the whole design on simulated paths (tests, benchmarks/seeds.py).

The method: repeated confidence intervals (Jennison & Turnbull 1989, "Interim analyses: the repeated confidence
interval approach", JRSS-B 51(3); Jennison & Turnbull 2000, Group Sequential Methods with Applications to Clinical
Trials, ch. 9). At every look n = min_n..max_n the interval mean_n ± c_n·s_n/√n is computed (s_n the sample sd of
the n differences), with c_n chosen so that the intervals of all looks cover the true mean difference at once with
probability ≥ 1 − α. Because the coverage is simultaneous, a decision read off the interval at any look — and so at
a look chosen by the data, such as the first one where it is decided — is wrong with probability ≤ α, whatever the
stopping rule. Under normal errors the t statistics (mean_n − μ)·√n/s_n of all looks have a joint distribution that
does not depend on μ or σ, so c_n is calibrated exactly, up to Monte-Carlo error, by simulating standard normal
paths (CALIBRATION_PATHS of them, a fixed seed: about ±0.0005 in α at 0.05; a second or two per (min_n, max_n),
cached).

The shape is Wang & Tsiatis's (1987, Biometrics 43) with Δ = 0.25, between Pocock's (1977) Δ = 0.5 (the same
nominal level at every look) and O'Brien & Fleming's (1979) Δ = 0 (early looks nearly closed): look n is tested at
the nominal one-sided level Φ(−C·(n/max_n)^(Δ − 0.5)) — on the t scale c_n is the t quantile with n − 1 degrees of
freedom at that level (the "significance level approach" Jennison & Turnbull 2000, §11.3, take for an unknown
variance), and C is calibrated exactly for the t statistics rather than carried over from the known-variance case.
benchmarks/seeds.py measures the choice: at equal power, Δ = 0.25 spends the fewest seeds averaged over true
differences 0, δ/2, δ, 2δ and a large one; Pocock's stops a little earlier on large differences but needs a larger
max_n for the same power, O'Brien & Fleming's is best near δ but slow on large differences. A constant c_n on the t
scale would be worse than all three: it spends most of α at the first looks, whose t has 2 or 3 degrees of freedom.

Decisions at a look, with the precedence of `_verdicts`:
- equivalent: the one-sided repeated bounds mean ± c1_n·s/√n both lie inside (−δ, δ), c1_n calibrated for one-sided
  simultaneous coverage ≥ 1 − α (the sequential TOST; the two-sided (1 − 2α) RCI would not do: a path can cross both
  bounds, so each one-sided error would exceed α);
- better / worse: the two-sided RCI mean ± c2_n·s/√n excludes 0, above / below;
- else undecided: another seed, unless n = max_n.
Multiplicity: Bonferroni, α/m per comparison — valid under any dependence between the comparisons and any stopping
rule, where Holm's step-down, which reads all comparisons at one time, is not simply carried across looks.

Guarantees, for independent normal differences with a common variance, at whatever look each arm stops:
P(some arm whose true difference is 0 is called better or worse) ≤ α; P(some arm whose true |difference| ≥ δ is
called equivalent) ≤ α; as in `_verdicts`, ≤ 2α for a wrong verdict of either kind when both kinds of arm exist.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special, stats

from ablate.report._verdicts import ALPHA, BETTER, EQUIVALENT, UNDECIDED, VERDICTS, WORSE, Verdict, check_levels, finite

CALIBRATION_PATHS = 200_000
CALIBRATION_SEED = 30  # issue 30
SHAPE = 0.25  # Wang & Tsiatis's Δ: 0.5 is Pocock's shape, 0 O'Brien & Fleming's
_CHUNK = 20_000  # paths simulated at once: bounded memory for a long max_n


@dataclass(frozen=True)
class Boundaries:
    looks: tuple[int, ...]  # n = min_n..max_n
    two_sided: tuple[float, ...]  # c2_n: mean ± c2_n·s/√n covers the true mean at every look at once w.p. ≥ 1 − α
    one_sided: tuple[float, ...]  # c1_n: mean + c1_n·s/√n stays above it at every look at once w.p. ≥ 1 − α
    nominal_two_sided: tuple[float, ...]  # the two-sided level each look is tested at
    nominal_one_sided: tuple[float, ...]


@dataclass(frozen=True)
class SequentialComparison:
    verdict: Verdict
    n: int  # seeds so far
    mean: float
    interval: tuple[float, float]  # the repeated (1 − α/m) interval: better/worse when it excludes 0
    equivalence_interval: tuple[float, float]  # the one-sided repeated bounds: equivalent when inside (−δ, δ)
    needs_more: bool  # undecided and below max_n: give it another seed


def boundaries(min_n: int, max_n: int, alpha: float = ALPHA, shape: float = SHAPE) -> Boundaries:
    """The critical values c_n of the repeated confidence intervals for looks min_n..max_n at level alpha."""
    _check_looks(min_n, max_n)
    looks = np.arange(min_n, max_n + 1)
    weight = _weights(looks, max_n, shape)
    two_sided, one_sided = _largest_z(min_n, max_n, shape)
    nominal_two = special.ndtr(-_quantile(two_sided, alpha) * weight)  # one tail of the two-sided test
    nominal_one = special.ndtr(-_quantile(one_sided, alpha) * weight)
    return Boundaries(tuple(int(n) for n in looks), _floats(stats.t.isf(nominal_two, looks - 1)),
                      _floats(stats.t.isf(nominal_one, looks - 1)), _floats(2 * nominal_two), _floats(nominal_one))


def sequential_verdict(differences: Sequence[float], delta: float, alpha: float = ALPHA, m: int = 1,
                       min_n: int = 3, max_n: int = 10, higher_is_better: bool = True) -> SequentialComparison:
    """The verdict so far of one comparison of m in an adaptive study, and whether it needs another seed."""
    check_levels(delta, alpha)
    d = finite(differences)
    n = len(d)
    if n > max_n:
        raise ValueError(f"{n} seeds is past the design's max_n = {max_n}")
    if n < min_n:
        return SequentialComparison(Verdict.UNDECIDED, n, float(d.mean()) if n else math.nan,
                                    (math.nan, math.nan), (math.nan, math.nan), True)
    bounds = boundaries(min_n, max_n, alpha / m)
    sign = 1.0 if higher_is_better else -1.0  # the codes' better is a positive difference
    mean, sd = float(d.mean()), 0.0 if np.ptp(d) == 0 else float(d.std(ddof=1))
    c2, c1 = bounds.two_sided[n - min_n], bounds.one_sided[n - min_n]
    code = int(_codes(np.array(sign * mean), np.array(sd), n, c2, c1, delta))
    se = sd / math.sqrt(n)
    return SequentialComparison(VERDICTS[code], n, mean, (mean - c2 * se, mean + c2 * se),
                                (mean - c1 * se, mean + c1 * se), code == UNDECIDED and n < max_n)


def sequential_family(differences: Mapping[str, Sequence[float]], delta: float, alpha: float = ALPHA,
                      min_n: int = 3, max_n: int = 10,
                      higher_is_better: bool = True) -> dict[str, SequentialComparison]:
    """`sequential_verdict` of every arm (name → its differences so far), Bonferroni over m = len(differences)."""
    return {name: sequential_verdict(d, delta, alpha, len(differences), min_n, max_n, higher_is_better)
            for name, d in differences.items()}


def budget(arms: int, min_n: int, max_n: int) -> tuple[int, int]:
    """The fewest and the most runs an adaptive study of `arms` arms (the baseline included) can take."""
    _check_looks(min_n, max_n)
    return arms * min_n, arms * max_n


def sequential_codes(paths: np.ndarray, delta: float, alpha: float = ALPHA, min_n: int = 3, max_n: int = 10,
                     shape: float = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """The adaptive design run on simulated paths, vectorised: paths (..., m, ≥ max_n) of per-seed differences →
    (verdict codes (..., m), seeds each arm took (..., m)); Bonferroni over m = paths.shape[-2], higher is better.

    Each arm stops at its first decided look, as the run loop stops it (`sequential_verdict` read after each seed).
    `shape` is for benchmarks/seeds.py's comparison of shapes: a study uses SHAPE.
    """
    check_levels(delta, alpha)
    bounds = boundaries(min_n, max_n, alpha / paths.shape[-2], shape)
    looks = np.array(bounds.looks)
    mean, sd = _running(np.asarray(paths, dtype=float)[..., :max_n], min_n)
    per_look = _codes(mean, sd, looks, np.array(bounds.two_sided), np.array(bounds.one_sided), delta)
    decided = per_look != UNDECIDED
    first = np.argmax(decided, axis=-1)
    stopped = decided.any(axis=-1)
    code = np.where(stopped, np.take_along_axis(per_look, first[..., None], axis=-1)[..., 0], UNDECIDED)
    return code, np.where(stopped, looks[first], max_n)


def _codes(mean, sd, n, c2, c1, delta: float) -> np.ndarray:
    """Verdict codes at a look (better is a positive mean), broadcasting over looks and paths."""
    se = sd / np.sqrt(n)
    equivalent = (mean - c1 * se > -delta) & (mean + c1 * se < delta)
    better, worse = mean - c2 * se > 0, mean + c2 * se < 0
    return np.where(equivalent, EQUIVALENT, np.where(better, BETTER, np.where(worse, WORSE, UNDECIDED)))


def _running(paths: np.ndarray, min_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd (ddof 1) of the first n values along the last axis, for n = min_n..length."""
    n = np.arange(1, paths.shape[-1] + 1)
    shifted = paths - paths[..., :1]  # the sd does not move with a shift; this keeps the sums of squares small
    total, squares = np.cumsum(shifted, axis=-1), np.cumsum(shifted**2, axis=-1)
    mean = total / n
    variance = np.maximum(squares - n * mean**2, 0.0) / np.maximum(n - 1, 1)
    return (mean + paths[..., :1])[..., min_n - 1:], np.sqrt(variance)[..., min_n - 1:]


def _weights(looks: np.ndarray, max_n: int, shape: float) -> np.ndarray:
    """The boundary's shape on the z scale: look n's critical z is C·(n/max_n)^(Δ − 0.5)."""
    return (looks / max_n) ** (shape - 0.5)


@lru_cache(maxsize=16)
def _largest_z(min_n: int, max_n: int, shape: float) -> tuple[np.ndarray, np.ndarray]:
    """For null paths: the largest over the looks of z_n / weight_n, z_n the standard normal quantile of look n's
    t-test p-value — two-sided (|t|, one tail) and one-sided (each path read in both directions, the null being
    symmetric) — sorted. A path crosses the boundary C·weight_n somewhere iff that largest value exceeds C."""
    rng = np.random.default_rng([CALIBRATION_SEED, min_n, max_n])
    looks = np.arange(min_n, max_n + 1)
    df, weight = looks - 1, _weights(looks, max_n, shape)
    two_sided, one_sided = [], []
    for start in range(0, CALIBRATION_PATHS, _CHUNK):
        z = rng.standard_normal((min(_CHUNK, CALIBRATION_PATHS - start), max_n))
        mean, sd = _running(z, min_n)
        t = mean * np.sqrt(looks) / sd
        two_sided.append((-special.ndtri(special.stdtr(df, -np.abs(t))) / weight).max(axis=-1))
        for direction in (t, -t):
            one_sided.append((-special.ndtri(special.stdtr(df, -direction)) / weight).max(axis=-1))
    return np.sort(np.concatenate(two_sided)), np.sort(np.concatenate(one_sided))


def _quantile(largest: np.ndarray, alpha: float) -> float:
    """The C that at most ⌊αN⌋ of the N simulated largest values exceed: P(crossing) ≤ α up to Monte-Carlo error."""
    k = math.floor(alpha * len(largest))
    if k < 50:
        raise ValueError(f"α = {alpha:g} per comparison is too small for the calibration's {len(largest):,} paths")
    return float(largest[len(largest) - k - 1])


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _check_looks(min_n: int, max_n: int) -> None:
    if not 2 <= min_n <= max_n:
        raise ValueError(f"the seeds must satisfy 2 ≤ min ≤ max, not min = {min_n}, max = {max_n}")
