"""Seeds the adaptive design spends against a fixed design of the same power (issue 30: "answers, not runs").

One comparison (arm − baseline, per-seed differences normal with sd σ), margin δ, α = 0.05, simulated with
ablate.report's own functions (`_verdicts.family_codes` for the fixed design, `_sequential.sequential_codes` for the
adaptive one, min 3 seeds). The right answer for a true difference μ: equivalent at μ = 0; better or equivalent for
0 < μ < δ; better for μ ≥ δ. Power is P(the right answer).

    python benchmarks/seeds.py [--paths 20000] [--sigma 0.1] [--delta 0.1]

Three tables, every number measured in this run:
1. planned for δ — what a researcher can do: the fixed n with power 0.8 at μ = δ (the smallest difference that
   matters), and the adaptive max whose power at μ = δ is at least the fixed design's; both then meet every true μ,
   and the fixed design spends its n whatever μ is.
2. the fixed n tuned to each true μ (power 0.8 there) against an adaptive max tuned to match it: the fixed design
   knows the answer's difficulty in advance, which no study does; the hardest comparison for the adaptive design.
3. the study-file example, seeds = { min = 3, max = 10 }, against 10 fixed seeds (not equal power: both columns).
4. table 1's mean ratio for the boundary shapes of the Wang & Tsiatis family (Δ = 0: O'Brien & Fleming, 0.5: Pocock),
   which is how _sequential.SHAPE was chosen.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ablate.report._sequential import SHAPE, sequential_codes  # noqa: E402
from ablate.report._verdicts import BETTER, EQUIVALENT, family_codes  # noqa: E402

ALPHA, POWER, LOW, LONGEST = 0.05, 0.8, 3, 120


def right(codes: np.ndarray, mu: float, delta: float) -> np.ndarray:
    if mu == 0:
        return codes == EQUIVALENT
    if mu < delta:
        return (codes == BETTER) | (codes == EQUIVALENT)
    return codes == BETTER


class Scenario:
    """A true difference μ with its simulated paths (common to every design, so designs differ by design only)."""

    def __init__(self, name: str, mu: float, sigma: float, delta: float, paths: int, seed: int):
        self.name, self.mu, self.sigma, self.delta = name, mu, sigma, delta
        self.draws = mu + sigma * np.random.default_rng(seed).standard_normal((paths, 1, LONGEST))

    def fixed(self, n: int) -> float:
        """Power of the fixed design with n seeds."""
        return float(right(family_codes(self.draws[..., :n], self.delta, ALPHA)[:, 0], self.mu, self.delta).mean())

    def adaptive(self, high: int, shape: float = SHAPE) -> tuple[float, float]:
        """Power and mean seeds of the adaptive design with seeds min 3, max `high`."""
        codes, seeds = sequential_codes(self.draws[..., :high], self.delta, ALPHA, LOW, high, shape)
        return float(right(codes[:, 0], self.mu, self.delta).mean()), float(seeds.mean())

    def fixed_n(self, power: float = POWER) -> int:
        return next(n for n in range(2, LONGEST + 1) if self.fixed(n) >= power)

    def adaptive_max(self, power: float, shape: float = SHAPE) -> int:
        """The smallest max_n whose power reaches `power`, by bisection (power grows with max_n; the paths are common
        to every max_n, so Monte-Carlo noise hardly breaks that): each max_n costs a calibration."""
        low, high = LOW - 1, LOW  # the power at `low` is taken as short
        while self.adaptive(high, shape)[0] < power:
            low, high = high, min(2 * high, LONGEST)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if self.adaptive(middle, shape)[0] >= power else (middle, high)
        return high


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def planned(scenarios: list[Scenario], design: Scenario, shape: float = SHAPE) -> tuple[str, float]:
    """Table 1, and its mean ratio of seeds."""
    n = design.fixed_n()
    fixed_power = design.fixed(n)
    high = design.adaptive_max(fixed_power, shape)
    rows, ratios = [], []
    for s in scenarios:
        power, seeds = s.adaptive(high, shape)
        ratios.append(seeds / n)
        rows.append([s.name, str(n), f"{s.fixed(n):.3f}", f"{seeds:.2f}", f"{power:.3f}", f"{seeds / n:.2f}",
                     f"{100 * (1 - seeds / n):.0f}%"])
    mean = float(np.mean(ratios))
    rows.append(["**mean**", "", "", "", "", f"**{mean:.2f}**", f"**{100 * (1 - mean):.0f}%**"])
    return (f"fixed n = {n} (power {fixed_power:.3f} at μ = δ); adaptive seeds 3..{high}\n\n"
            + table(["true μ", "fixed seeds", "fixed power", "adaptive mean seeds", "adaptive power",
                     "ratio", "fewer seeds"], rows)), mean


def tuned(scenarios: list[Scenario]) -> str:
    rows, ratios = [], []
    for s in scenarios:
        n = s.fixed_n()
        fixed_power = s.fixed(n)
        high = s.adaptive_max(fixed_power)
        power, seeds = s.adaptive(high)
        ratios.append(seeds / n)
        rows.append([s.name, str(n), f"{fixed_power:.3f}", f"3..{high}", f"{seeds:.2f}", f"{power:.3f}",
                     f"{seeds / n:.2f}", f"{100 * (1 - seeds / n):.0f}%"])
    mean = float(np.mean(ratios))
    rows.append(["**mean**", "", "", "", "", "", f"**{mean:.2f}**", f"**{100 * (1 - mean):.0f}%**"])
    return table(["true μ", "fixed seeds", "fixed power", "adaptive seeds", "adaptive mean seeds", "adaptive power",
                  "ratio", "fewer seeds"], rows)


def example(scenarios: list[Scenario], high: int = 10) -> str:
    rows, ratios = [], []
    for s in scenarios:
        power, seeds = s.adaptive(high)
        ratios.append(seeds / high)
        rows.append([s.name, f"{s.fixed(high):.3f}", f"{seeds:.2f}", f"{power:.3f}", f"{seeds / high:.2f}",
                     f"{100 * (1 - seeds / high):.0f}%"])
    mean = float(np.mean(ratios))
    rows.append(["**mean**", "", "", "", f"**{mean:.2f}**", f"**{100 * (1 - mean):.0f}%**"])
    return table(["true μ", f"fixed {high}: power", "adaptive mean seeds", "adaptive power", "ratio", "fewer seeds"],
                 rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=20_000, help="simulated studies per scenario")
    parser.add_argument("--sigma", type=float, default=0.1, help="sd of the per-seed differences (points)")
    parser.add_argument("--delta", type=float, default=0.1, help="the margin δ (points)")
    args = parser.parse_args()
    started = time.perf_counter()
    sigma, delta = args.sigma, args.delta
    named = [("0", 0.0), ("δ/2", delta / 2), ("δ", delta), ("2δ", 2 * delta), ("+4.8 (mlp vs linear)", 4.8)]
    scenarios = [Scenario(f"{name} = {mu:g} pts" if name != "0" else "0", mu, sigma, delta, args.paths, seed)
                 for seed, (name, mu) in enumerate(named)]
    print(f"σ = {sigma:g} points, δ = {delta:g} points (δ/σ = {delta / sigma:g}), α = {ALPHA}, one comparison, "
          f"{args.paths:,} simulated studies per scenario\n")
    print("## 1. Planned for δ: equal power at μ = δ, then every true μ\n")
    print(planned(scenarios, scenarios[2])[0] + "\n")
    print("## 2. The fixed n tuned to each true μ (power 0.8 there), the adaptive max matched to it\n")
    print(tuned(scenarios) + "\n")
    print("## 3. The study-file example: seeds = { min = 3, max = 10 } against 10 fixed seeds\n")
    print(example(scenarios) + "\n")
    print("## 4. Table 1's mean ratio by boundary shape (Wang & Tsiatis Δ)\n")
    rows = [[f"{shape:g}" + (" (used)" if shape == SHAPE else ""), f"{planned(scenarios, scenarios[2], shape)[1]:.3f}"]
            for shape in (0.0, 0.25, 0.5)]
    print(table(["Δ", "mean ratio, planned for δ"], rows) + "\n")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
