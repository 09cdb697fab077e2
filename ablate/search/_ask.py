"""A worker's side of a search task: ask Optuna for a point, train it as an ablate trial, tell how it went."""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field, replace

import optuna

from ablate import datasets, models
from ablate.design import Trial, trial_for
from ablate.errors import SpecError
from ablate.models import ModelError
from ablate.search._pareto import front_points, scores_text
from ablate.search._study import best_points, describe, may_count, open_study, suggest
from ablate.search._task import (
    CONFIRM_ATTR,
    DECLINED_ATTR,
    HOST_ATTR,
    INTERRUPTED_ATTR,
    PID_ATTR,
    PID_START_ATTR,
    POINT_ATTR,
    REJECTED_ATTR,
    RUN_ATTR,
    SearchTask,
    optuna_name,
    trial_epochs,
)
from ablate.spec import (
    BUDGETS,
    STARTUP_SAMPLERS,
    Stage,
    Study,
    budget_use,
    parse_study,
    point_problem,
    random_point,
    resolve_point,
)
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
    # With several objectives: the costs told after it, and those known before training (params, macs) by name.
    costs: tuple[str, ...] = ()
    known: dict[str, float] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return self.asked.number

    def attach_run(self, run_id: str) -> None:
        self.asked.set_user_attr(RUN_ATTR, run_id)

    def should_prune(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Report the epoch's objective; True when the pruner stops the trial here. Never with several objectives:
        Optuna refuses to report for a multi-objective study (and the spec allows no pruner then)."""
        if self.costs:
            return False
        self.asked.report(metrics[self.objective], epoch)
        return self.asked.should_prune()

    # The tells return False when the trial had been ended already — by another invocation that took its asker for
    # gone (search's recover_stale) and enqueued its point again: the trial is not this worker's any more.

    def values(self, history: list[dict[str, float]], tested_epoch: int, train_seconds: float) -> list[float]:
        """What a trained trial tells: the validation objective at the tested epoch, then each cost."""
        measured = {"train_seconds": train_seconds, **self.known}
        return [history[tested_epoch - 1][self.objective]] + [float(measured[name]) for name in self.costs]

    def complete(self, value: float | list[float]) -> bool:
        return self._tell(values=value)

    def pruned(self) -> bool:
        return self._tell(state=optuna.trial.TrialState.PRUNED)

    def failed(self) -> bool:
        return self._tell(state=optuna.trial.TrialState.FAIL)

    def interrupted(self) -> None:
        """Cut off (Ctrl-C, a vanished parent): it does not count towards `trials`, and its point runs again."""
        try:
            self.asked.set_user_attr(INTERRUPTED_ATTR, True)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # recovered by another invocation, which enqueued the point
        if self._tell(state=optuna.trial.TrialState.FAIL):
            self.optuna_study.enqueue_trial(self.asked.params, skip_if_exists=False)

    def lost_to_another(self, exc: BaseException) -> bool:
        """Was `exc` (raised while training: a report of an epoch) the storage refusing a trial ended by another?"""
        return isinstance(exc, optuna.exceptions.UpdateFinishedTrialError) and not self._running()

    def _tell(self, **how) -> bool:
        try:
            self.optuna_study.tell(self.asked, **how)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            if self._running():
                raise  # refused for another reason
            return False
        return True

    def _running(self) -> bool:
        trial = self.optuna_study._storage.get_trial(self.asked._trial_id)
        return trial.state == optuna.trial.TrialState.RUNNING


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


def reject(
    optuna_study: optuna.Study, asked: optuna.Trial, point: tuple, problem: str, excess: dict[str, float]
) -> None:
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


def set_up_new(study: Study, optuna_study: optuna.Study) -> None:
    """What a new Optuna study gets, once, from the process whose creation of it won (open_study's on_create): its
    description for optuna-dashboard (describe) and its random start (enqueue_startup)."""
    describe(optuna_study, study)
    enqueue_startup(study, optuna_study)


def enqueue_startup(study: Study, optuna_study: optuna.Study) -> None:
    """Under a budget, the sampler's random start draws among the points that train. TPE counts every pruned trial,
    rejected ones too, towards its `startup_trials`: left to itself in a space that is mostly over budget, it would
    end its random start after a few rejections and one or two trained points. So `startup_trials` points drawn at
    random (seeded by the study's seed) from those within every budget are enqueued — once, by the process that
    created the Optuna study (open_study's on_create): enqueued per driver, two invocations started together trained
    the same points twice."""
    spec = study.search
    if spec.settings.sampler not in STARTUP_SAMPLERS or not any(getattr(spec.settings, key) for key in BUDGETS):
        return
    rng = random.Random(spec.settings.seed * 1_000_003)
    for _ in range(spec.settings.startup_trials):
        for _ in range(MAX_REJECTED):
            point = random_point(spec.space, rng)
            if _trains(study, point):
                optuna_study.enqueue_trial(_params(spec.space, point), skip_if_exists=False)
                break


def _params(space: tuple, point: tuple) -> dict:
    """A point as Optuna's parameters: a choice by its label (as `suggest` asks for it)."""
    entries = {entry.path: entry for entry in space}
    return {path: entries[path].labels[entries[path].choices.index(value)] if entries[path].kind == "categorical"
            else value for path, value in point}


def _over_budget(optuna_study: optuna.Study, budget: int, number: int | None = None) -> bool:
    """Is the search's budget of `trials` spent, counting every invocation's trials — those that count or may yet
    (may_count)? For an asked trial (`number`), only the trials numbered before it: the storage numbers trials once
    across all processes, so of two askers racing for the last place exactly one is within it."""
    ahead = [t for t in optuna_study.get_trials(deepcopy=False)
             if may_count(t) and (number is None or t.number < number)]
    return len(ahead) >= budget


def _decline(optuna_study: optuna.Study, asked: optuna.Trial) -> None:
    asked.set_user_attr(DECLINED_ATTR, True)
    optuna_study.tell(asked, state=optuna.trial.TrialState.FAIL)


def ask(task: SearchTask) -> AskedTrial | None:
    """Ask the task's storage for a point and the ablate trial that trains it (on the search's seed); None when the
    search's budget is spent (_over_budget). A point `point_problem` rules out is rejected (see `reject`) and
    another asked."""
    study = _study_of(task)
    spec = study.search
    budget = spec.settings.trials
    optuna_study = open_study(spec, task.storage, optuna_name(study), trial_epochs(study))
    if budget and _over_budget(optuna_study, budget):
        return None
    for _ in range(MAX_REJECTED):
        asked = optuna_study.ask()
        if budget and _over_budget(optuna_study, budget, asked.number):
            _decline(optuna_study, asked)
            return None
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
    costs = spec.settings.objective_names[1:]
    known = _known_costs(study, stage, trial, costs)
    return AskedTrial(optuna_study, asked, trial, spec.settings.objective, costs, known)


def _known_costs(study: Study, stage: Stage, trial: Trial, costs: tuple[str, ...]) -> dict[str, float]:
    """The costs a point has before it trains: its trainable parameters and its MACs per image."""
    known = {}
    if "params" in costs:
        known["params"] = float(trial.params_count)
    if "macs" in costs:
        macs = models.macs(stage.model, datasets.get(study.info.dataset))
        if macs is None:
            raise SpecError(study.path, "search.objectives", f"model kind '{stage.model.kind}' cannot count its "
                            "multiply-accumulates; use params, or a built-in kind")
        known["macs"] = float(macs)
    return known


BASE_ARM = "base"


def confirm_key(study: Study, optuna_study: optuna.Study) -> str:
    """What a confirm choice was made of: how many configurations, out of how many counted trials. A search continued
    with a larger budget, or asked for more configurations, chooses again."""
    from ablate.search._study import finished_count

    return f"top {study.search.settings.confirm_top} of {finished_count(optuna_study)}"


def confirm_choice(study: Study, optuna_study: optuna.Study) -> list[int]:
    """The numbers of the trials whose points the confirm phase re-trains: the best distinct ones that still train;
    with several objectives, points of the Pareto front spread along it (search's front_points)."""
    settings = study.search.settings
    choose = front_points if settings.several else best_points
    return [frozen.number for frozen, _ in choose(optuna_study, settings.confirm_top,
                                                   lambda point: _trains(study, point))]


def store_confirm(optuna_study: optuna.Study, key: str, chosen: list[int]) -> None:
    """The confirm choice, on the Optuna study, for whoever reads the search later (every invocation writes the same
    value: the one decided first, see ablate.run's run_search)."""
    optuna_study.set_user_attr(CONFIRM_ATTR, {"key": key, "trials": chosen})


def _stored_choice(study: Study, optuna_study: optuna.Study) -> list[int] | None:
    stored = optuna_study.user_attrs.get(CONFIRM_ATTR)
    if isinstance(stored, dict) and stored.get("key") == confirm_key(study, optuna_study):
        return [int(number) for number in stored.get("trials", [])]
    return None


def confirm_trials(study: Study, optuna_study: optuna.Study,
                   chosen: list[int] | None = None) -> tuple[tuple[Stage, ...], list[Trial]]:
    """The confirm phase's configurations as arms — `chosen` (trial numbers), else the choice stored on the Optuna
    study for its current trials, else confirm_choice — and their trials on the confirm seeds; with `confirm_base`,
    the unsearched settings first, as the arm the others are compared with. A top configuration that is the base
    settings is that one arm, named for both (its trials are the same trials)."""
    spec = study.search
    if chosen is None:
        chosen = _stored_choice(study, optuna_study)
    if chosen is None:
        chosen = confirm_choice(study, optuna_study)
    trials = {t.number: t for t in optuna_study.get_trials(deepcopy=False)}
    best = [(trials[n], tuple((p, v) for p, v in trials[n].user_attrs.get(POINT_ATTR, []))) for n in chosen]
    arms, changes = [], []
    base = resolve_point(study, (), name=BASE_ARM, index=0) if spec.settings.confirm_base and best else None
    base_hash = trial_for(study, base, spec.confirm_seeds[0]).hash if base else None
    base_change = "the unsearched settings"
    for rank, (frozen, point) in enumerate(best, 1):
        name = f"top{rank} (trial {frozen.number})"
        change = f"search {scores_text(spec.settings, frozen.values)}"
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
