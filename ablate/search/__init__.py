"""Search: the Optuna side of `design = "search"`.

Owns the Optuna study of a search (its storage: a journal file beside the MLflow store, or an
RDB URL; its seeded sampler and its pruner), suggesting a point of the searched space, the
search as tasks (`SearchTask`: a worker asks for a point, trains it and tells how it went,
with pruning after every epoch), the trials a dead process left RUNNING, and the confirm
phase's arms (the best distinct points, re-trained on fresh seeds; with several objectives, points of the
Pareto front spread along it).

May import: ablate.spec, ablate.design, ablate.tracking (liveness and names; never its
MLflow side), ablate.errors; optuna only on its Optuna side, which this package imports on
first use, so that a study without a search never pays for it. Running the tasks is
ablate.run's.
"""

from typing import TYPE_CHECKING

from ablate.search._storage import JOURNAL_FILE, default_storage, open_storage
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
    search_identity,
    trial_epochs,
)

if TYPE_CHECKING:
    from ablate.search._ask import (
        AskedTrial,
        ask,
        confirm_choice,
        confirm_key,
        confirm_trials,
        enqueue_startup,
        set_up_new,
        store_confirm,
    )
    from ablate.search._pareto import front, front_points, objective_text, scores_text
    from ablate.search._study import (
        best_points,
        describe,
        finished_count,
        make_pruner,
        make_sampler,
        open_study,
        recover_stale,
        rejected_count,
        running_count,
        search_progress,
        stored_searches,
        suggest,
    )

__all__ = [
    "CONFIRM_ATTR",
    "DECLINED_ATTR",
    "confirm_choice",
    "confirm_key",
    "enqueue_startup",
    "set_up_new",
    "running_count",
    "store_confirm",
    "AskedTrial",
    "HOST_ATTR",
    "INTERRUPTED_ATTR",
    "JOURNAL_FILE",
    "PID_ATTR",
    "PID_START_ATTR",
    "POINT_ATTR",
    "REJECTED_ATTR",
    "RUN_ATTR",
    "SearchTask",
    "ask",
    "best_points",
    "confirm_trials",
    "describe",
    "default_storage",
    "finished_count",
    "front",
    "front_points",
    "objective_text",
    "scores_text",
    "make_pruner",
    "make_sampler",
    "open_storage",
    "open_study",
    "optuna_name",
    "stored_searches",
    "recover_stale",
    "rejected_count",
    "search_identity",
    "search_progress",
    "suggest",
    "trial_epochs",
]

_OPTUNA_SIDE = {
    "AskedTrial": "_ask",
    "ask": "_ask",
    "confirm_trials": "_ask",
    "confirm_choice": "_ask",
    "confirm_key": "_ask",
    "enqueue_startup": "_ask",
    "set_up_new": "_ask",
    "describe": "_study",
    "front": "_pareto",
    "front_points": "_pareto",
    "objective_text": "_pareto",
    "scores_text": "_pareto",
    "store_confirm": "_ask",
    "running_count": "_study",
    "best_points": "_study",
    "finished_count": "_study",
    "stored_searches": "_study",
    "search_progress": "_study",
    "make_pruner": "_study",
    "make_sampler": "_study",
    "open_study": "_study",
    "recover_stale": "_study",
    "rejected_count": "_study",
    "suggest": "_study",
}


def __getattr__(name: str):
    if name in _OPTUNA_SIDE:  # imported on first use: optuna takes half a second to import
        import importlib

        return getattr(importlib.import_module(f"ablate.search.{_OPTUNA_SIDE[name]}"), name)
    raise AttributeError(f"module 'ablate.search' has no attribute {name!r}")
