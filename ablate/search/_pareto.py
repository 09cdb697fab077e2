"""A search of several objectives: its Pareto front, the points of it the confirm phase re-trains, and a trial's
objective values said in words."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import optuna

from ablate.search._task import POINT_ATTR
from ablate.spec import SearchSettings


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The Pareto front (Optuna's best_trials: complete trials no other complete trial dominates), one trial per
    distinct point (the earliest), best first on the validation objective (the first), then by trial number."""
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(study.best_trials, key=lambda t: (-t.values[0] if maximize else t.values[0], t.number))
    seen, distinct = set(), []
    for trial in sorted(ranked, key=lambda t: t.number):
        point = json.dumps(trial.user_attrs.get(POINT_ATTR), sort_keys=True)
        if point not in seen:
            seen.add(point)
            distinct.append(trial.number)
    return [t for t in ranked if t.number in distinct]


def spread(count: int, k: int) -> list[int]:
    """k of `count` positions along a front, evenly spaced by rank with both ends in (k = 1: the first, the best on
    validation): the cheap and the accurate end, and what lies between, rather than k neighbours at one end."""
    k = min(k, count)
    if k <= 1:
        return list(range(k))
    return sorted({round(i * (count - 1) / (k - 1)) for i in range(k)})


def front_points(study: optuna.Study, k: int, admit: Callable[[tuple], bool] = lambda point: True,
                 ) -> list[tuple[optuna.trial.FrozenTrial, tuple]]:
    """At most k points of the Pareto front for the confirm phase (distinct points that `admit` lets through, spread
    along the front), with the points they trained, best first on the validation objective."""
    if k == 0:
        return []
    admitted = []
    for trial in front(study):
        point = tuple((p, v) for p, v in trial.user_attrs.get(POINT_ATTR, []))
        if admit(point):
            admitted.append((trial, point))
    return [admitted[i] for i in spread(len(admitted), k)]


def objective_text(name: str, value: float) -> str:
    """One objective's value (without its name) as a reader wants it: a validation metric to 4 places, a count in
    full, seconds to 0.1."""
    if name in ("params", "macs"):
        return f"{value:,.0f}"
    if name == "train_seconds":
        return f"{value:.1f}"
    return f"{value:.4f}"


def scores_text(settings: SearchSettings, values: Sequence[float]) -> str:
    """A trial's objective values in words: 'val_accuracy 0.9712, params 25,450'."""
    return ", ".join(f"{name} {objective_text(name, value)}" for name, value in zip(settings.objective_names, values))
