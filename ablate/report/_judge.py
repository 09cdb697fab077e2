"""The verdict columns of a study's table: each arm against the baseline, seed for seed — better, worse, equivalent
within ±δ, or undecided — with the paired effect size, the seeds a decision would need, and (from 5 seeds on) a
bootstrap interval and the probability of improvement.

Where the numbers come from (the statistics themselves: _verdicts, _sequential and _robust, each with its contract):
- δ and α are the study's `[stats]` (recorded in the plan document of its latest invocation; a study run before
  `[stats]` existed gets the defaults). δ is in the units the table shows the metric in (accuracy in points). When the
  report ranks by another kind of metric than `[stats] metric` (a loss for an accuracy), δ is that kind's default.
- A study with fixed seeds is judged with `compare_family` (Holm over the arms). A study with adaptive seeds is judged
  with `sequential_verdict` at each arm's leading seeds in seed order — the repeated confidence intervals the run
  decided on, which stay valid however many rounds it took; the fixed-n tests would not be.
- Only the seeds both the arm and the baseline finished count (paired).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ablate.report._robust import bootstrap_interval, probability_of_improvement
from ablate.report._sequential import sequential_verdict
from ablate.report._verdicts import compare_family

DEFAULT_MARGIN = {"accuracy": 0.1, "loss": 0.01}  # [stats] margin's default (points), and a loss's
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class Judging:
    """How comparisons become verdicts: δ in the table's units of the metric, α, and adaptive seeds' (min, max)."""

    margin: float = DEFAULT_MARGIN["accuracy"]
    alpha: float = DEFAULT_ALPHA
    adaptive: tuple[int, int] | None = None

    @classmethod
    def of_plan(cls, plan: dict | None, metric: str) -> Judging:
        """From the plan document of the study's latest invocation (ablate.design's plan_document)."""
        stats = (plan or {}).get("stats") or {}
        adaptive = (plan or {}).get("adaptive")
        kind = _kind(metric)
        margin = stats.get("margin") if _kind(stats.get("metric", "test_accuracy")) == kind else None
        return cls(float(margin if margin is not None else DEFAULT_MARGIN[kind]), float(stats.get("alpha", 0.05)),
                   None if not adaptive else (int(adaptive["min"]), int(adaptive["max"])))


def _kind(metric: str) -> str:
    return "accuracy" if metric.endswith("accuracy") else "loss"


def judge(table: pd.DataFrame, scores: dict[str, pd.Series], baseline: int, metric: str, judging: Judging) -> None:
    """Add the verdict columns to `table` (one row per arm, in order), from each arm's scores by seed (in the table's
    units). The baseline's row gets none."""
    names = list(table["stage"])
    reference = scores[names[baseline]]
    differences = {name: _paired(scores[name], reference) for i, name in enumerate(names) if i != baseline}
    higher = metric.endswith("accuracy")
    fixed = compare_family(differences, judging.margin, judging.alpha, higher) if differences else {}
    adaptive = _adaptive(differences, judging, higher)
    rows = [_row(name, i == baseline, fixed.get(name), adaptive.get(name), scores[name], reference, higher)
            for i, name in enumerate(names)]
    for column in _COLUMNS:
        table[column] = [row.get(column, math.nan) for row in rows]
    table["verdict"] = table["verdict"].astype(object).where(table["verdict"].notna(), None)
    table["margin"] = judging.margin


_COLUMNS = ("verdict", "verdict_pairs", "diff_low", "diff_high", "equiv_low", "equiv_high", "effect_dz", "effect_low",
            "effect_high", "seeds_needed", "boot_low", "boot_high", "p_improvement", "p_improvement_low",
            "p_improvement_high")


def _paired(arm: pd.Series, baseline: pd.Series) -> list[float]:
    """arm − baseline on the seeds both finished, in seed order (adaptive seeds decide on the leading ones)."""
    common = sorted(arm.dropna().index.intersection(baseline.dropna().index))
    return [float(arm[seed] - baseline[seed]) for seed in common]


def _adaptive(differences: dict[str, list[float]], judging: Judging, higher: bool) -> dict:
    """Each arm's verdict where the run's rule stopped it: at its first decided look, else at its last seed. An arm
    has no seeds past that look when the run alone trained it; seeds trained beyond it otherwise (another study of
    the same trials, a design edited afterwards) do not change the verdict the rounds reached."""
    if judging.adaptive is None or not differences:
        return {}
    low, high = judging.adaptive
    m = len(differences)
    stopped = {}
    for name, d in differences.items():
        leading = d[:high]
        for n in range(min(low, len(leading)), len(leading) + 1):
            stopped[name] = sequential_verdict(leading[:n], judging.margin, judging.alpha, m, low, high, higher)
            if stopped[name].verdict != "undecided":
                break
    return stopped


def _row(name: str, is_baseline: bool, fixed, adaptive, scores: pd.Series, reference: pd.Series,
         higher: bool) -> dict:
    row: dict = {}
    boot = bootstrap_interval(scores.dropna().to_numpy())
    if boot is not None:
        row["boot_low"], row["boot_high"] = boot
    if is_baseline or fixed is None:
        row["verdict"] = None
        return row
    decided = adaptive if adaptive is not None else fixed
    # The intervals the verdict read: better/worse when the first excludes 0, equivalent when the second lies
    # inside ±δ (a repeated interval's bounds already carry the correction; a fixed design's are at Holm's level).
    difference, equivalence = ((adaptive.interval, adaptive.equivalence_interval) if adaptive is not None
                               else (fixed.decision_interval, fixed.decision_equivalence_interval))
    row.update(verdict=str(decided.verdict), verdict_pairs=decided.n, diff_low=difference[0],
               diff_high=difference[1], equiv_low=equivalence[0], equiv_high=equivalence[1], effect_dz=fixed.effect,
               effect_low=fixed.effect_interval[0], effect_high=fixed.effect_interval[1],
               seeds_needed=_needed(fixed) if decided.verdict == "undecided" else math.nan)
    improvement = probability_of_improvement(scores.dropna().to_numpy(), reference.dropna().to_numpy(),
                                             higher_is_better=higher)
    if improvement is not None:
        row.update(p_improvement=improvement.probability, p_improvement_low=improvement.interval[0],
                   p_improvement_high=improvement.interval[1])
    return row


def _needed(comparison) -> float:
    """The fewest seeds at which a decision either way would have power 0.8 at the observed spread; nan: none can."""
    options = [n for n in (comparison.seeds_to_differ, comparison.seeds_to_equal) if n is not None]
    return float(min(options)) if options else math.nan


def verdict_cells(table: pd.DataFrame) -> list[str]:
    """The verdict column as the reader sees it: better, worse, equivalent, or undecided with the seeds it needs."""
    cells = []
    for verdict, needed in zip(table["verdict"], table["seeds_needed"]):
        if verdict is None:
            cells.append("—")
        elif verdict == "undecided":
            cells.append("undecided" + ("" if pd.isna(needed) else f" (~{int(needed)} seeds)"))
        else:
            cells.append(str(verdict))
    return cells


def verdict_note(judging: Judging, arm: str, base: str, comparisons: int, unit: str) -> str:
    """The footnote's sentences on the verdict column."""
    margin = f"±{judging.margin:g}{unit}"
    if judging.adaptive is not None:
        low, high = judging.adaptive
        how = (f"adaptive seeds ({low} to {high} per {arm}): read from repeated confidence intervals on each {arm}'s "
               f"seeds in order, Bonferroni over the {comparisons} comparisons, which keep α = {judging.alpha:g} "
               "however many rounds the run took")
    else:
        how = (f"the paired t-test and the two one-sided tests (TOST) of equivalence, each Holm-corrected over the "
               f"{comparisons} comparisons at α = {judging.alpha:g}")
    return (f"Verdict against '{base}' ({how}): equivalent when the difference is shown to lie within {margin} "
            f"([stats] margin, the smallest difference that matters); else better or worse when it is shown to differ "
            f"from 0; else undecided, with the seeds at which a decision either way would have power 0.8 at the "
            f"observed spread. CSV and JSON also hold the interval of the difference, the paired effect size d_z with "
            f"its interval and, from 5 seeds on, a bootstrap interval of the mean and P({arm} > {base}).")
