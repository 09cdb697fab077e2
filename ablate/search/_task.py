"""A search as tasks: the parent starts SearchTasks, each of which a worker turns into one Optuna trial."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ablate.spec import Study, resolve_point

# User attributes of an Optuna trial: the point it trained, who asked for it (named as ablate.tracking's liveness
# tags are) and its MLflow run; and, on a trial cut off by Ctrl-C or a dead parent, that it was.
POINT_ATTR, HOST_ATTR, PID_ATTR, PID_START_ATTR, RUN_ATTR = "point", "host", "pid", "pid_start", "mlflow_run_id"
INTERRUPTED_ATTR = "interrupted"
# On a point rejected before training (over `max_params`, or a network that does not fit the data): why. Such a trial
# is told PRUNED at once with an Optuna constraint (search._ask.reject), never trained, and does not count towards
# `trials`.
REJECTED_ATTR = "rejected"
# On a trial asked once the search's budget was spent (by every invocation together): it trains nothing, is told FAIL
# and does not count.
DECLINED_ATTR = "declined"
# On the Optuna study: the confirm phase's configurations, decided once for every invocation (run's run_search).
CONFIRM_ATTR = "confirm"


@dataclass(frozen=True)
class SearchTask:
    """Start one Optuna trial (a worker asks the storage for its parameters). Picklable, self-contained: the
    study travels as its text, so a worker on another machine needs no study file."""

    index: int  # the how-many-th trial of the search this is: seeds the sampler
    storage: str
    study_path: str
    study_text: str

    @property
    def key(self) -> str:
        return f"search-{self.index}"


def trial_epochs(study: Study) -> int:
    """The epochs of a search's trials (its pruner's resource), as the study's fixed settings say."""
    return resolve_point(study, ()).train.epochs


def search_identity(study: Study) -> str:
    """What a search's trials mean, hashed: the fixed settings of every stage it may pick, its space, the seed its
    trials train on and its objectives. Two runs of a study with the same identity continue one Optuna study; a
    change to any of these (more epochs, another range) makes a new one, since old scores would rank configurations
    on other terms. The budget (trials, timeout), the sampler, the pruner and the confirm phase are not part of it:
    changing them continues the search."""
    from ablate.design import identity, trial_for

    spec = study.search
    stages = [(("stage", s.name),) for s in study.sources] if len(study.sources) > 1 else [()]
    seed = spec.seeds[0]
    document = {
        "stages": [identity(trial_for(study, resolve_point(study, point), seed).settings) for point in stages],
        "space": [identity(entry) for entry in spec.space],
        "objective": spec.settings.objective,
        "maximize": spec.settings.maximize,
    }
    if spec.settings.several:  # only then: a single objective's identity, and so its Optuna study, stay as they were
        document["objectives"] = list(spec.settings.objective_names)
        document["directions"] = list(spec.settings.optuna_directions)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def optuna_name(study: Study) -> str:
    """The Optuna study a search lives in: the study's name and its identity (search_identity)."""
    return f"{study.name}@{search_identity(study)}"
