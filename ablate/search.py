"""Everything Optuna: storage, samplers, pruners, suggesting a point of the space, stale trials.

The Optuna study lives in a journal file beside the MLflow store by default (the storage
Optuna makes for several processes on one machine) or in an RDB given with --storage (for
several machines). Workers ask and tell through that storage themselves; the parent only
decides how many trials to start. Each worker builds its sampler with a seed derived from
the study's seed and the trial's index, so parallel workers never draw the same "random"
startup points and a continuation is reproducible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from ablate.errors import AblateError
from ablate.spec import SearchSettings, SearchSpec, SpaceEntry
from ablate.store import sqlite_path

JOURNAL_FILE = "optuna-journal.log"
POINT_ATTR, HOST_ATTR, PID_ATTR, PID_START_ATTR, RUN_ATTR = "point", "host", "pid", "pid_start", "mlflow_run_id"
INTERRUPTED_ATTR = "interrupted"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class SearchTask:
    """Start one Optuna trial (a worker asks the storage for its parameters)."""

    index: int  # the how-many-th trial of the search this is: seeds the sampler
    storage: str
    study_path: str
    study_text: str

    @property
    def key(self) -> str:
        return f"search-{self.index}"


def default_storage(tracking_uri: str) -> str:
    """A journal file beside a SQLite MLflow store; other stores need --storage."""
    database = sqlite_path(tracking_uri)
    if database is None:
        raise AblateError(
            f"a search with tracking URI {tracking_uri} needs --storage: an RDB URL (postgresql://…, mysql://…) "
            "or a journal file path that every worker can reach"
        )
    return str(database.resolve().parent / JOURNAL_FILE)


def open_storage(storage: str):
    """An RDB URL as is; anything else is a journal file path."""
    if "://" in storage:
        return storage
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))


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
    if settings.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=settings.seed)  # a low-discrepancy sequence: one seed for all
    raise ValueError(settings.sampler)


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


def open_study(spec: SearchSpec, storage: str, name: str, epochs: int, index: int = 0) -> optuna.Study:
    return optuna.create_study(
        study_name=name,
        storage=open_storage(storage),
        sampler=make_sampler(spec.settings, index),
        pruner=make_pruner(spec.settings, epochs),
        direction="maximize" if spec.settings.maximize else "minimize",
        load_if_exists=True,
    )


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
            chosen[entry.path] = trial.suggest_int(entry.path, int(entry.low), int(entry.high), step=step, log=entry.log)
        else:
            chosen[entry.path] = trial.suggest_float(entry.path, entry.low, entry.high, step=entry.step, log=entry.log)
    return tuple(chosen.items())


def finished_count(study: optuna.Study) -> int:
    """Trials that count towards `trials`: complete, pruned, or failed on their own (not cut off by a kill)."""
    states = optuna.trial.TrialState
    return sum(
        1 for t in study.get_trials(deepcopy=False)
        if t.state in (states.COMPLETE, states.PRUNED)
        or (t.state == states.FAIL and not t.user_attrs.get(INTERRUPTED_ATTR))
    )


def recover_stale(study: optuna.Study, alive) -> int:
    """Trials a dead process left RUNNING: failed (marked interrupted) and their parameters enqueued to run again."""
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = trial.user_attrs
        tags = {"host": attrs.get(HOST_ATTR, ""), "pid": str(attrs.get(PID_ATTR, "")), "pid_start": attrs.get(PID_START_ATTR, "")}
        if alive(tags):
            continue
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        recovered += 1
    return recovered


def best_points(study: optuna.Study, k: int) -> list[tuple[optuna.trial.FrozenTrial, tuple]]:
    """The k best complete trials and the points they trained (distinct points only)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete.sort(key=lambda t: t.value, reverse=reverse)
    best, seen = [], set()
    for trial in complete:
        point = json.dumps(trial.user_attrs.get(POINT_ATTR), sort_keys=True)
        if point in seen:
            continue
        seen.add(point)
        best.append((trial, tuple((p, v) for p, v in json.loads(point))))
        if len(best) == k:
            break
    return best
