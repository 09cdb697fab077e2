"""A search as tasks: the parent starts SearchTasks, each of which a worker turns into one Optuna trial."""

from __future__ import annotations

from dataclasses import dataclass

from ablate.spec import Study, resolve_point

# User attributes of an Optuna trial: the point it trained, who asked for it (named as ablate.tracking's liveness
# tags are) and its MLflow run; and, on a trial cut off by Ctrl-C or a dead parent, that it was.
POINT_ATTR, HOST_ATTR, PID_ATTR, PID_START_ATTR, RUN_ATTR = "point", "host", "pid", "pid_start", "mlflow_run_id"
INTERRUPTED_ATTR = "interrupted"


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
