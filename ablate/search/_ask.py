"""A worker's side of a search task: ask Optuna for a point, train it as an ablate trial, tell how it went."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from ablate.design import Trial, trial_for
from ablate.search._study import best_points, open_study, suggest
from ablate.search._task import (
    optuna_name,
    HOST_ATTR, INTERRUPTED_ATTR, PID_ATTR, PID_START_ATTR, POINT_ATTR, RUN_ATTR, SearchTask, trial_epochs,
)
from ablate.spec import Stage, Study, parse_study, resolve_point
from ablate.tracking import Identity, heartbeat_tags


_PARSED: dict[str, Study] = {}  # per worker process: a study is validated once, not once per trial


def _study_of(task: SearchTask) -> Study:
    if task.study_text not in _PARSED:
        _PARSED[task.study_text] = parse_study(task.study_text, task.study_path)
    return _PARSED[task.study_text]


@dataclass
class AskedTrial:
    """One Optuna trial a worker asked for, the ablate trial that trains its point, and the tells that end it."""

    optuna_study: optuna.Study
    asked: optuna.Trial
    trial: Trial
    objective: str  # the validation metric told and reported

    @property
    def number(self) -> int:
        return self.asked.number

    def attach_run(self, run_id: str) -> None:
        self.asked.set_user_attr(RUN_ATTR, run_id)

    def should_prune(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Report the epoch's objective; True when the pruner stops the trial here."""
        self.asked.report(metrics[self.objective], epoch)
        return self.asked.should_prune()

    def complete(self, value: float) -> None:
        self.optuna_study.tell(self.asked, value)

    def pruned(self) -> None:
        self.optuna_study.tell(self.asked, state=optuna.trial.TrialState.PRUNED)

    def failed(self) -> None:
        self.optuna_study.tell(self.asked, state=optuna.trial.TrialState.FAIL)

    def interrupted(self) -> None:
        """Cut off (Ctrl-C, a vanished parent): it does not count towards `trials`, and its point runs again."""
        self.asked.set_user_attr(INTERRUPTED_ATTR, True)
        self.optuna_study.tell(self.asked, state=optuna.trial.TrialState.FAIL)
        self.optuna_study.enqueue_trial(self.asked.params, skip_if_exists=False)


def ask(task: SearchTask) -> AskedTrial:
    """Ask the task's storage for a point, as the trial of index `task.index`, and the ablate trial that trains it
    (on the search's seed)."""
    study = _study_of(task)
    spec = study.search
    optuna_study = open_study(spec, task.storage, optuna_name(study), trial_epochs(study), task.index)
    asked = optuna_study.ask()
    point = suggest(asked, spec.space)
    who = Identity.of_this_process()
    # Who asked, and when (a heartbeat as liveness reads it): until the trial's MLflow run exists and beats for it, a
    # process on another host can tell a trial whose asker died at once from one being started.
    attrs = {POINT_ATTR: [list(p) for p in point], HOST_ATTR: who.host, PID_ATTR: who.pid, PID_START_ATTR: who.start,
             **heartbeat_tags()}
    for key, value in attrs.items():
        asked.set_user_attr(key, value)
    trial = trial_for(study, resolve_point(study, point, index=asked.number), spec.seeds[0],
                      changes=f"Optuna trial {asked.number}")
    return AskedTrial(optuna_study, asked, trial, spec.settings.objective)


def confirm_trials(study: Study, optuna_study: optuna.Study) -> tuple[tuple[Stage, ...], list[Trial]]:
    """The best distinct configurations as arms, and their trials on the confirm seeds."""
    spec = study.search
    best = best_points(optuna_study, spec.settings.confirm_top)
    arms = tuple(
        resolve_point(study, point, name=f"top{rank} (trial {frozen.number})", index=rank - 1)
        for rank, (frozen, point) in enumerate(best, 1)
    )
    confirm = [
        trial_for(study, arm, seed, changes=f"search {spec.settings.objective} {frozen.value:.4f}")
        for arm, (frozen, _) in zip(arms, best) for seed in spec.confirm_seeds
    ]
    return arms, confirm
