"""What a worker is given: one trial, a pack of trials trained as one network, or one search trial to ask for."""

from __future__ import annotations

from ablate.design import Pack, Trial
from ablate.search import SearchTask

Task = Trial | Pack | SearchTask


def task_key(task: Task) -> str:
    """What a worker's events name its task by: a trial's hash, a pack's or a search task's key."""
    return task.hash if isinstance(task, Trial) else task.key


def task_trials(task: Task) -> tuple[Trial, ...]:
    """The trials a task trains, as far as known before it runs (a search task draws its trial as it starts)."""
    if isinstance(task, Trial):
        return (task,)
    return task.trials if isinstance(task, Pack) else ()
