"""A worker's side of a search task: ask Optuna for a point, train it as an ablate trial, tell how it went."""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, replace

import optuna

from ablate.design import Trial, trial_for
from ablate.search._study import best_points, open_study, suggest
from ablate.search._task import (
    optuna_name,
    HOST_ATTR, INTERRUPTED_ATTR, PID_ATTR, PID_START_ATTR, POINT_ATTR, REJECTED_ATTR, RUN_ATTR, SearchTask, trial_epochs,
)
from ablate.errors import SpecError
from ablate.models import ModelError
from ablate.spec import BUDGETS, STARTUP_SAMPLERS, Stage, Study, budget_use, parse_study, point_problem, random_point, resolve_point
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


# Rejections in a row before a worker gives up on its task: `ablate plan` and `ablate run` refuse a space where no
# point drawn at random fits, so reaching this means the sampler keeps proposing what the budget rules out.
MAX_REJECTED = 1000


def budget_excess(study: Study, stage: Stage | None) -> dict[str, float]:
    """Each budget's excess as a fraction of it (0.1: 10% over; ≤ 0: within), as Optuna constraints; a point that does
    not resolve, or whose network does not fit the data, is {"fits": 1.0}."""
    try:
        use = budget_use(study, stage) if stage is not None else None
    except ModelError:
        use = None
    if use is None:
        return {"fits": 1.0}
    return {key: count / budget - 1.0 for key, (count, budget) in use.items()}


def _constrain(asked: optuna.Trial, excess: dict[str, float]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for key, value in excess.items():
            asked.set_constraint(key, value)


def reject(optuna_study: optuna.Study, asked: optuna.Trial, point: tuple, problem: str, excess: dict[str, float]) -> None:
    """A point that will not train ends PRUNED at once, marked REJECTED_ATTR (it does not count towards `trials`),
    with its excess over the budget as an Optuna constraint. TPE ranks an infeasible trial below every feasible one,
    so it learns to stop proposing it; told FAIL instead, TPE ignored it and proposed the same point again and again
    (seen: 8,000 rejections of one point in a row)."""
    asked.set_user_attr(POINT_ATTR, [list(p) for p in point])
    asked.set_user_attr(REJECTED_ATTR, problem)
    _constrain(asked, excess)
    optuna_study.tell(asked, state=optuna.trial.TrialState.PRUNED)


def _trains(study: Study, point: tuple) -> bool:
    """Whether a point would be trained (resolves, fits the data, within every budget)."""
    try:
        return point_problem(study, resolve_point(study, point)) is None
    except SpecError:
        return False


def _enqueue_startup_point(study: Study, optuna_study: optuna.Study, index: int) -> None:
    """Under a budget, the sampler's random start draws among the points that train. TPE counts every pruned trial,
    rejected ones too, towards its `startup_trials`: left to itself in a space that is mostly over budget, it would
    end its random start after a few rejections and one or two trained points. So while fewer than `startup_trials`
    points have been trained (or are training), a point drawn at random from those within every budget (seeded by the
    trial's index) is enqueued for this ask."""
    spec = study.search
    if spec.settings.sampler not in STARTUP_SAMPLERS or not any(getattr(spec.settings, key) for key in BUDGETS):
        return
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING,
              optuna.trial.TrialState.WAITING)
    trained = [t for t in optuna_study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(REJECTED_ATTR)]
    if len(trained) >= spec.settings.startup_trials:
        return
    rng = random.Random(spec.settings.seed * 1_000_003 + index)
    for _ in range(MAX_REJECTED):
        point = random_point(spec.space, rng)
        if _trains(study, point):
            optuna_study.enqueue_trial(_params(spec.space, point), skip_if_exists=False)
            return


def _params(space: tuple, point: tuple) -> dict:
    """A point as Optuna's parameters: a choice by its label (as `suggest` asks for it)."""
    entries = {entry.path: entry for entry in space}
    return {path: entries[path].labels[entries[path].choices.index(value)] if entries[path].kind == "categorical"
            else value for path, value in point}


def ask(task: SearchTask) -> AskedTrial:
    """Ask the task's storage for a point, as the trial of index `task.index`, and the ablate trial that trains it
    (on the search's seed). A point `point_problem` rules out is rejected (see `reject`) and another asked."""
    study = _study_of(task)
    spec = study.search
    optuna_study = open_study(spec, task.storage, optuna_name(study), trial_epochs(study), task.index)
    _enqueue_startup_point(study, optuna_study, task.index)
    for _ in range(MAX_REJECTED):
        asked = optuna_study.ask()
        try:
            point = suggest(asked, spec.space)
            try:
                stage = resolve_point(study, point, index=asked.number)
                problem = point_problem(study, stage)
            except SpecError as exc:  # settings that contradict each other only in this combination
                stage, problem = None, f"{exc.path}: {exc.message}"
            if problem is None:
                break
            reject(optuna_study, asked, point, problem, budget_excess(study, stage))
        except BaseException:  # Ctrl-C mid-ask: no one would ever end this trial (it names no asker yet)
            asked.set_user_attr(INTERRUPTED_ATTR, True)
            optuna_study.tell(asked, state=optuna.trial.TrialState.FAIL)
            raise
    else:
        raise SpecError(study.path, "search.space", f"the sampler proposed {MAX_REJECTED} points in a row that "
                        f"cannot train (the last: {problem}); widen the budget or narrow search.space")
    who = Identity.of_this_process()
    # Who asked, and when (a heartbeat as liveness reads it): until the trial's MLflow run exists and beats for it, a
    # process on another host can tell a trial whose asker died at once from one being started.
    attrs = {POINT_ATTR: [list(p) for p in point], HOST_ATTR: who.host, PID_ATTR: who.pid, PID_START_ATTR: who.start,
             **heartbeat_tags()}
    for key, value in attrs.items():
        asked.set_user_attr(key, value)
    _constrain(asked, budget_excess(study, stage))  # within every budget: feasible, as TPE must know
    trial = trial_for(study, stage, spec.seeds[0], changes=f"Optuna trial {asked.number}")
    return AskedTrial(optuna_study, asked, trial, spec.settings.objective)


BASE_ARM = "base"


def confirm_trials(study: Study, optuna_study: optuna.Study) -> tuple[tuple[Stage, ...], list[Trial]]:
    """The best distinct configurations as arms, and their trials on the confirm seeds; with `confirm_base`, the
    unsearched settings first, as the arm the others are compared with. A top configuration that is the base
    settings is that one arm, named for both (its trials are the same trials)."""
    spec = study.search
    best = best_points(optuna_study, spec.settings.confirm_top, lambda point: _trains(study, point))
    arms, changes = [], []
    base = resolve_point(study, (), name=BASE_ARM, index=0) if spec.settings.confirm_base and best else None
    base_hash = trial_for(study, base, spec.confirm_seeds[0]).hash if base else None
    base_change = "the unsearched settings"
    for rank, (frozen, point) in enumerate(best, 1):
        name = f"top{rank} (trial {frozen.number})"
        change = f"search {spec.settings.objective} {frozen.value:.4f}"
        arm = resolve_point(study, point, name=name, index=len(arms) + (base is not None))
        if base is not None and trial_for(study, arm, spec.confirm_seeds[0]).hash == base_hash:
            base = replace(base, name=f"{BASE_ARM} = {name}")
            base_change = f"the unsearched settings; {change}"
            continue
        arms.append(arm)
        changes.append(change)
    if base is not None:
        arms = [base] + [replace(arm, index=i) for i, arm in enumerate(arms, 1)]
        changes.insert(0, base_change)
    confirm = [
        trial_for(study, arm, seed, changes=change)
        for arm, change in zip(arms, changes) for seed in spec.confirm_seeds
    ]
    return tuple(arms), confirm
