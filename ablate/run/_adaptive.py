"""Adaptive seeds: which trials a study with `seeds = { min, max }` trains next, and why (issue 30).

Every arm starts with the study's first `min` seeds. After each round, each arm other than the baseline is compared
with the baseline over the leading seeds both have finished (arm − baseline, seed by seed, in seed order), every
arm at once: ablate.report's `sequential_family` (repeated confidence intervals, Bonferroni over the arms, so a
verdict read after any round keeps its error rate). An arm still undecided below `max` seeds gets its next seed, and
the baseline every seed some arm needs; a decided arm, or one at `max`, gets no more.

The decision is a function of the finished results alone (`next_round`), so a rerun decides the same from the same
store; the next seeds are ordinary trials, whose hash holds the seed, so each is trained once. A trial this
invocation may not train — running in another invocation, or failed here — is `held`: an arm that needs it waits,
left to that invocation or to the next run. The metric is read in the units the report shows it in (accuracies in
percentage points), as the margin δ of [stats] is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ablate.design import Trial, settings_hash
from ablate.spec import Study

if TYPE_CHECKING:
    from ablate.report import SequentialComparison

RUNNING_ELSEWHERE = "running in another invocation"
FAILED_HERE = "failed here"


@dataclass(frozen=True)
class Arm:
    """One arm's state after a round."""

    name: str
    trials: tuple[Trial, ...]  # every seed it may get, in seed order
    paired: int  # leading seeds it and the baseline both finished (the baseline: its own finished leading seeds)
    comparison: SequentialComparison | None  # its verdict so far; None for the baseline
    wants: int  # leading seeds the decisions call for now (its own, or for the baseline any arm's)
    more: bool  # not done: it needs seeds it lacks (undecided below max, or its first `min` unfinished)
    waits: tuple[str, ...] = ()  # the trials it needs that this invocation may not train: 'mlp seed 3 (why)'

    @property
    def wanted(self) -> tuple[Trial, ...]:
        return self.trials[: self.wants]


@dataclass(frozen=True)
class Round:
    """The decisions after a round: every arm's state, and the trials to train next."""

    baseline: str
    arms: dict[str, Arm]  # in the study's order, the baseline included
    todo: list[Trial]  # to train now, in the study's order
    settled: list[Trial]  # the finished trials of every arm that is done: its models can be settled
    least: int  # the seeds every arm starts with (`min`)
    percent: bool  # the metric is an accuracy, compared in percentage points

    @property
    def wanted(self) -> list[Trial]:
        """Every trial the decisions call for so far: finished, to train, or held."""
        return [t for arm in self.arms.values() for t in arm.wanted]


def next_round(study: Study, trials: list[Trial], results: Mapping[str, float],
               held: Mapping[str, str] | None = None) -> Round:
    """What to train next: `trials` every trial an arm may get (ablate.design's expand), `results` trial hash → its
    metric (study.stats.metric, ×100 for an accuracy) for every finished trial, `held` trial hash → why this
    invocation may not train it (RUNNING_ELSEWHERE, FAILED_HERE)."""
    from ablate.report import sequential_family  # scipy and MLflow: only where a study is run

    held = held or {}
    adaptive, stats = study.adaptive, study.stats
    by_arm = _arms(study, trials)
    base = baseline_arm(study, by_arm)
    others = [name for name in by_arm if name != base]
    paired = {name: _paired(by_arm[name], by_arm[base], results) for name in others}
    differences = {name: _differences(by_arm[name], by_arm[base], paired[name], results) for name in others}
    comparisons = sequential_family(differences, stats.margin, stats.alpha, adaptive.min, adaptive.max,
                                    not stats.metric.endswith("loss")) if others else {}
    arms = {}
    for name in others:
        more = comparisons[name].needs_more and paired[name] < adaptive.max
        wants = min(adaptive.max, max(adaptive.min, paired[name] + 1)) if more else paired[name]
        arms[name] = Arm(name, by_arm[name], paired[name], comparisons[name], wants, more)
    base_wants = max([adaptive.min, *(arm.wants for arm in arms.values())])
    base_done = all(t.hash in results for t in by_arm[base][:base_wants])
    arms[base] = Arm(base, by_arm[base], _paired(by_arm[base], by_arm[base], results), None, base_wants,
                     any(arm.more for arm in arms.values()) or not base_done)
    arms = {name: _waiting(arms[name], arms[base], results, held) for name in by_arm}
    wanted = {t.hash for arm in arms.values() for t in arm.wanted}
    todo = [t for t in trials if t.hash in wanted and t.hash not in results and t.hash not in held]
    settled = [t for arm in arms.values() if not arm.more for t in arm.trials if t.hash in results]
    return Round(base, arms, todo, settled, adaptive.min, stats.metric.endswith("accuracy"))


def baseline_arm(study: Study, arms: Mapping[str, tuple[Trial, ...]]) -> str:
    """The arm the others are compared with, as the report takes it (the plan document's `baseline`): the one
    [study] baseline names — not in an ablation, whose baseline is its first arm — else the first. A grid point
    merged into an earlier point with the same settings is that point."""
    name = study.info.baseline if study.info.design != "ablation" else None
    if name is None or name in arms:
        return name or next(iter(arms))
    stage = next(s for s in study.stages if s.name == name)
    same = settings_hash(stage.settings(study.info.dataset, study.info.seeds[0]))
    return next(arm for arm, trials in arms.items() if trials[0].hash == same)


def round_note(previous: Round | None, current: Round) -> str | None:
    """What the decisions after a round say that is news: arms decided (or at max) since `previous`, arms that get
    another seed, and why; arms that wait on a trial this invocation may not train."""
    parts = []
    for arm in current.arms.values():
        if arm.comparison is None:
            continue
        was = None if previous is None else previous.arms[arm.name]
        if arm.waits:
            parts.append(f"{_versus(arm, current)} waits for {', '.join(arm.waits)}")
        elif arm.more and arm.comparison.n >= current.least:
            parts.append(f"{_versus(arm, current)} undecided after {arm.comparison.n} seeds "
                         f"({_effect(arm.comparison, current.percent)}) → gets seed {arm.trials[arm.paired].seed}")
        elif not arm.more and was is not None and was.more:
            parts.append(f"{_versus(arm, current)} {_outcome(arm, current)}")
    return "adaptive seeds: " + "; ".join(parts) if parts else None


def final_note(current: Round) -> str:
    """The seeds each arm used, and its verdict."""
    parts = []
    for arm in current.arms.values():
        if arm.comparison is None:
            parts.append(f"{arm.name} (baseline) {arm.paired} seeds" + (", more to come" if arm.more else ""))
        elif arm.more:
            parts.append(f"{arm.name} {arm.paired} seeds so far, undecided"
                         + (f", waiting for {', '.join(arm.waits)}" if arm.waits else ""))
        else:
            parts.append(f"{arm.name} {_outcome(arm, current)}")
    return "adaptive seeds used: " + "; ".join(parts)


def _arms(study: Study, trials: list[Trial]) -> dict[str, tuple[Trial, ...]]:
    """Each arm's trials in seed order (the study's seeds: first, first + 1, …)."""
    order = {seed: i for i, seed in enumerate(study.info.seeds)}
    arms: dict[str, list[Trial]] = {}
    for trial in trials:
        arms.setdefault(trial.stage, []).append(trial)
    return {name: tuple(sorted(arm, key=lambda t: order[t.seed])) for name, arm in arms.items()}


def _paired(arm: tuple[Trial, ...], base: tuple[Trial, ...], results: Mapping[str, float]) -> int:
    n = 0
    while n < len(arm) and arm[n].hash in results and base[n].hash in results:
        n += 1
    return n


def _differences(arm: tuple[Trial, ...], base: tuple[Trial, ...], n: int, results: Mapping[str, float]) -> list[float]:
    """arm − baseline over the first n seeds; a seed either run lacks the metric of (diverged: nan) is left out, as
    the report leaves it out."""
    pairs = ((results[a.hash], results[b.hash]) for a, b in zip(arm[:n], base[:n]))
    return [a - b for a, b in pairs if math.isfinite(a) and math.isfinite(b)]


def _waiting(arm: Arm, base: Arm, results: Mapping[str, float], held: Mapping[str, str]) -> Arm:
    """The arm with the trials it needs and may not get here: its wanted seeds, and the baseline's at those seeds."""
    if not arm.more:
        return arm
    needed = [*arm.wanted, *(base.trials[: arm.wants] if arm is not base else ())]
    waits = tuple(f"{t.stage} seed {t.seed} ({held[t.hash]})" for t in needed
                  if t.hash not in results and t.hash in held)
    return Arm(arm.name, arm.trials, arm.paired, arm.comparison, arm.wants, arm.more, waits)


def _versus(arm: Arm, current: Round) -> str:
    return f"{arm.name} vs {current.baseline}"


def _outcome(arm: Arm, current: Round) -> str:
    """'better after 3 seeds (Δ …)', or 'undecided at the maximum, 10 seeds (Δ …)'."""
    comparison = arm.comparison
    said = "undecided at the maximum," if comparison.verdict == "undecided" else f"{comparison.verdict} after"
    return f"{said} {comparison.n} seeds ({_effect(comparison, current.percent)})"


def _effect(comparison: SequentialComparison, percent: bool) -> str:
    """'Δ +1.52 pts, difference interval −3.90…+6.94, equivalence interval −2.80…+5.84': the mean difference and the
    two repeated intervals the verdict reads (better/worse: the first excludes 0; equivalent: the second lies inside
    ±δ), in the report's units."""
    unit, digits = (" pts", ".2f") if percent else ("", ".3g")

    def span(bounds: tuple[float, float]) -> str:
        return f"{bounds[0]:+{digits}}…{bounds[1]:+{digits}}"

    return (f"Δ {comparison.mean:+{digits}}{unit}, difference interval {span(comparison.interval)}, "
            f"equivalence interval {span(comparison.equivalence_interval)}")
