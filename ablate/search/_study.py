"""The Optuna study of a search: sampler, pruner, suggesting a point of the space, and its trials' bookkeeping.

The sampler is made afresh for each trial with a seed derived from the study's seed and the
trial's number, which the storage hands out once across every process that asks: parallel
workers and concurrent invocations never draw the same "random" point, and a continuation is
reproducible. A trial records, as user attributes, the point it trained, who asked for
it (host, pid, start) and its MLflow run, so a later invocation can tell whether it is
still running and retry it if not. The study itself names its objective and says where it
comes from (`describe`), for optuna-dashboard.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna

from ablate.search._storage import open_storage
from ablate.search._task import DECLINED_ATTR, INTERRUPTED_ATTR, POINT_ATTR, REJECTED_ATTR
from ablate.spec import SearchSettings, SearchSpec, SpaceEntry, Study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_sampler(settings: SearchSettings, index: int = 0) -> optuna.samplers.BaseSampler:
    seed = settings.seed * 1_000_003 + index
    startup = settings.startup_trials
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup)
    if settings.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if settings.sampler == "nsgaii":  # its first generation is its random start
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, startup))
    if settings.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=settings.seed)  # a low-discrepancy sequence: one seed for all
    raise ValueError(settings.sampler)


class PerTrialSeed(optuna.samplers.BaseSampler):
    """The study's sampler, made for each trial (at before_trial, which Optuna calls first) with a seed of the study's
    seed and the trial's number. A seed per process or per task is not enough: two invocations started together
    hand out the same task indices, and their workers drew the same points."""

    def __init__(self, settings: SearchSettings):
        self.settings = settings
        self.inner = make_sampler(settings)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.inner = make_sampler(self.settings, trial.number)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def make_pruner(settings: SearchSettings, epochs: int) -> optuna.pruners.BasePruner:
    startup, warmup = settings.startup_trials, settings.warmup_epochs
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if settings.pruner == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=startup, n_warmup_steps=warmup)
    if settings.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if settings.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner()
    return optuna.pruners.NopPruner()


def open_study(spec: SearchSpec, storage: str, name: str, epochs: int,
               on_create: Callable[[optuna.Study], None] | None = None) -> optuna.Study:
    """The search's Optuna study, created if new. `on_create` runs only in the one process whose creation won (the
    storage refuses a second study of the name): what a study gets once, such as its enqueued random start."""
    settings = dict(study_name=name, storage=open_storage(storage), sampler=PerTrialSeed(spec.settings),
                    pruner=make_pruner(spec.settings, epochs),
                    directions=list(spec.settings.optuna_directions))
    if on_create is None:
        return optuna.create_study(**settings, load_if_exists=True)
    try:
        created = optuna.create_study(**settings)
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.create_study(**settings, load_if_exists=True)
    on_create(created)
    return created


# The user attributes a search's Optuna study carries, for optuna-dashboard and whoever opens the storage.
STUDY_FILE_ATTR, VERSION_ATTR, OBJECTIVE_ATTR, DIRECTION_ATTR = "study_file", "ablate_version", "objective", "direction"


def describe(optuna_study: optuna.Study, study: Study) -> None:
    """Name what optuna-dashboard shows of a search (else "Objective 0" and nothing more): its objectives' metric names
    (set_metric_names) and, as user attributes, the study file, the ablate version that made it, the objectives and
    their directions (several: separated by ", "). Only what the study lacks is written: the process that creates the
    study writes them all, once (set_up_new); any other finds them, writes nothing; a study an earlier ablate created
    gets them on its resume."""
    from ablate import __version__

    settings = study.search.settings
    if optuna_study.metric_names is None:
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and unchanged since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna_study.set_metric_names(list(settings.objective_names))
    path = Path(study.path)
    wanted = {STUDY_FILE_ATTR: str(path.resolve()) if path.is_file() else study.path, VERSION_ATTR: __version__,
              OBJECTIVE_ATTR: ", ".join(settings.objective_names),
              DIRECTION_ATTR: ", ".join(settings.optuna_directions)}
    held = optuna_study.user_attrs
    for key, value in wanted.items():
        if key not in held:
            optuna_study.set_user_attr(key, value)


def suggest(trial: optuna.Trial, space: tuple[SpaceEntry, ...]) -> tuple[tuple[str, Any], ...]:
    """One point of the space; an entry is searched only when its `when` holds for the values chosen above it."""
    chosen: dict[str, Any] = {}
    for entry in space:
        if not entry.applies(chosen):
            continue
        if entry.kind == "categorical":
            labels = entry.labels
            chosen[entry.path] = entry.choices[labels.index(trial.suggest_categorical(entry.path, labels))]
        elif entry.kind == "int":
            step = int(entry.step or 1)
            chosen[entry.path] = trial.suggest_int(entry.path, int(entry.low), int(entry.high), step=step,
                                                   log=entry.log)
        else:
            chosen[entry.path] = trial.suggest_float(entry.path, entry.low, entry.high, step=entry.step, log=entry.log)
    return tuple(chosen.items())


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Does a trial count towards `trials`: complete, pruned, or failed on its own (not cut off by a kill, not a point
    rejected before training, not declined because the budget was spent)?"""
    states = optuna.trial.TrialState
    if trial.user_attrs.get(REJECTED_ATTR) or trial.user_attrs.get(DECLINED_ATTR):
        return False
    return trial.state in (states.COMPLETE, states.PRUNED) or (
        trial.state == states.FAIL and not trial.user_attrs.get(INTERRUPTED_ATTR))


def may_count(trial: optuna.trial.FrozenTrial) -> bool:
    """Does it count, or may it yet: counts, or RUNNING (being trained, or still being asked)."""
    running = trial.state == optuna.trial.TrialState.RUNNING and not trial.user_attrs.get(REJECTED_ATTR)
    return running or counts(trial)


def finished_count(study: optuna.Study) -> int:
    """Trials that count towards `trials` (counts)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


def running_count(study: optuna.Study) -> int:
    """Trials being trained now, by any invocation, that will count once they end."""
    return sum(1 for t in study.get_trials(deepcopy=False) if may_count(t) and not counts(t))


def rejected_count(study: optuna.Study) -> int:
    """Points rejected before training (REJECTED_ATTR)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get(REJECTED_ATTR))


def recover_stale(study: optuna.Study, alive: Callable[[Mapping[str, Any]], bool]) -> list[optuna.trial.FrozenTrial]:
    """Trials a dead process left RUNNING: failed (marked interrupted) and their parameters enqueued to run again.

    `alive` gets a trial's user attributes (who asked for it: HOST_ATTR, PID_ATTR, PID_START_ATTR, named as
    ablate.tracking's liveness tags are; and its RUN_ATTR) and says whether that process still runs it.

    The storage changes a trial's state only while it is RUNNING, atomically (RDB: under a row lock; journal: in log
    order), so of several invocations recovering at once one fails each trial and enqueues its retry; the others,
    and a late tell of the asker, find it ended. Returns the trials this call recovered.
    """
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if alive(trial.user_attrs):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # ended meanwhile: by its asker, or by another invocation recovering it
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        recovered.append(trial)
    return recovered


def best_points(study: optuna.Study, k: int, admit: Callable[[tuple], bool] = lambda point: True,
                ) -> list[tuple[optuna.trial.FrozenTrial, tuple]]:
    """The k best complete trials and the points they trained (distinct points that `admit` lets through: a budget
    tightened since a trial trained rules it out)."""
    if k == 0:
        return []
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete.sort(key=lambda t: t.value, reverse=reverse)
    best, seen = [], set()
    for trial in complete:
        point = json.dumps(trial.user_attrs.get(POINT_ATTR), sort_keys=True)
        if point in seen:
            continue
        seen.add(point)
        parsed = tuple((p, v) for p, v in json.loads(point))
        if not admit(parsed):
            continue
        best.append((trial, parsed))
        if len(best) == k:
            break
    return best


def stored_searches(storage: str, study_name: str) -> dict[str, int]:
    """The Optuna studies of an ablate study in the storage — one per version of its search (optuna_name), earlier
    ones kept when its settings or space changed — with their trial counts."""
    opened = open_storage(storage)
    names = [n for n in optuna.get_all_study_names(opened) if n.split("@")[0] == study_name]
    return {name: len(optuna.load_study(study_name=name, storage=opened).trials) for name in names}


def search_progress(storage: str, study_name: str, current: str) -> tuple[dict[str, int], dict[str, int]] | None:
    """What the storage holds of a search, read without creating anything: the trial states of its current Optuna
    study (state name → count; empty when it has none yet) and the earlier versions' trial counts. None: there is no
    storage yet (a journal file not made)."""
    if "://" not in storage and not Path(storage).exists():
        return None
    stored = stored_searches(storage, study_name)
    states: dict[str, int] = {}
    if current in stored:
        for trial in optuna.load_study(study_name=current, storage=open_storage(storage)).trials:
            state = ("rejected" if trial.user_attrs.get(REJECTED_ATTR) else
                     "declined" if trial.user_attrs.get(DECLINED_ATTR) else trial.state.name.lower())
            states[state] = states.get(state, 0) + 1
    return states, {name: count for name, count in stored.items() if name != current}
