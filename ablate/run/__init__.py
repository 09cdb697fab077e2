"""Run: executing a study's trials — where they run, what workers report, and what the parent does about it.

Owns worker slots (devices, workers per device, threads), the worker (a slot's device set up
once, then trials, packs and search trials trained and logged to MLflow by itself, each to its
trial's run), the faults that end a task and the reason a failed trial is recorded with, the
typed events a worker reports, the backend protocol and its backends — `LocalBackend`
(supervised processes on this machine), `InlineBackend` (in-process, for tests and
debugging) and `RayBackend` (actors on a Ray cluster; its module imported on first use) — the
dispatcher (hands out tasks, notices lost workers, handles Ctrl-C), getting a study ready once
(`prepare`: the store, the slots, the data) and the study and search runs that tie them to the
store (`run_study`, `run_search`) — a study with adaptive seeds round by round, each round's trials decided
from the results so far (its _adaptive and _rounds modules).

May import: every package below it — ablate.spec, ablate.design, ablate.datasets,
ablate.engine, ablate.search, ablate.tracking, ablate.report (the statistics adaptive seeds
decide by, where a study is run) — and multiprocessing. The dispatcher assumes
nothing of where a worker runs beyond the Backend protocol.
"""

from typing import TYPE_CHECKING

from ablate.run._adaptive import Round, next_round
from ablate.run._backend import Backend, MakeBackend
from ablate.run._dispatch import MAX_LOST_IN_A_ROW, Dispatcher, Ledger, Reporter, RunSummary
from ablate.run._events import (
    Done,
    Epoch,
    Event,
    Failed,
    Finished,
    Killed,
    Outcome,
    Ready,
    Skipped,
    Started,
    StoreFailed,
)
from ablate.run._faults import FAULTS_ENV, Orphaned, classify, faults_from_env
from ablate.run._inline import InlineBackend, WorkerDied
from ablate.run._invocation import pack_size
from ablate.run._local import EventChannel, LocalBackend, start_worker_server
from ablate.run._prepare import Loaded, Prepared, check_data, data_folder, load, placement, prepare
from ablate.run._signals import PREEMPTED, Interrupted, as_interrupted, hurried, interruptible
from ablate.run._slots import Slot, check_memory, cpu_model, free_memory, hardware, plan_slots, plan_slots_for
from ablate.run._study import run_search, run_study
from ablate.run._tasks import Task, task_key, task_trials
from ablate.run._worker import Worker, WorkerConfig

__all__ = [
    "Backend",
    "Dispatcher",
    "Loaded",
    "MakeBackend",
    "Prepared",
    "RayBackend",
    "check_data",
    "data_folder",
    "load",
    "prepare",
    "Done",
    "Epoch",
    "Event",
    "EventChannel",
    "FAULTS_ENV",
    "Failed",
    "Finished",
    "InlineBackend",
    "Interrupted",
    "Killed",
    "Ledger",
    "LocalBackend",
    "MAX_LOST_IN_A_ROW",
    "Orphaned",
    "Outcome",
    "PREEMPTED",
    "Ready",
    "Reporter",
    "Round",
    "RunSummary",
    "as_interrupted",
    "Skipped",
    "Slot",
    "Started",
    "StoreFailed",
    "Task",
    "Worker",
    "WorkerConfig",
    "WorkerDied",
    "classify",
    "check_memory",
    "cpu_model",
    "faults_from_env",
    "free_memory",
    "hardware",
    "hurried",
    "interruptible",
    "next_round",
    "pack_size",
    "placement",
    "plan_slots",
    "plan_slots_for",
    "run_search",
    "run_study",
    "start_worker_server",
    "task_key",
    "task_trials",
]

if TYPE_CHECKING:
    from ablate.run._ray import RayBackend


def __getattr__(name: str):
    if name == "RayBackend":  # imported on first use, as `--backend ray` does: Ray itself only when it connects
        from ablate.run._ray import RayBackend

        return RayBackend
    raise AttributeError(f"module 'ablate.run' has no attribute {name!r}")
