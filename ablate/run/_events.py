"""What a worker tells the dispatcher, as typed events: produced and consumed by name, never by position.

Every event names its slot and the task it is about (a trial's hash, a pack's or a search
task's key), so news of a task a slot no longer holds is told apart and ignored. Events are
frozen dataclasses of picklable values: they cross a pipe, or a cluster engine's wire.

A task's events, in order: Started once per trial it trains (a pack starts several, a
search task one once Optuna gave it a point), Epoch after each epoch of a trial, Finished or
Failed once per trial, then Done when the worker is free again — or Killed instead of the
rest when Ctrl-C cut the task short (its runs are already recorded KILLED). A trial another
invocation holds (its claim failed) is Skipped instead of Started. StoreFailed replaces Done
when the tracking store broke under the task: nothing more can be recorded, the run stops.
"""

from __future__ import annotations

from dataclasses import dataclass

from ablate.design import Trial


@dataclass(frozen=True)
class Outcome:
    """How a finished trial did, as the progress display shows it: its test accuracy and train time, or a note
    (a search trial is never tested: its objective, or where the pruner stopped it)."""

    test_accuracy: float | None = None
    train_seconds: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Ready:
    slot: int
    pid: int


@dataclass(frozen=True)
class Started:
    slot: int
    task: str
    trial: Trial
    run_id: str


@dataclass(frozen=True)
class Epoch:
    slot: int
    task: str
    trial_hash: str
    epoch: int
    val_accuracy: float


@dataclass(frozen=True)
class Finished:
    slot: int
    task: str
    trial_hash: str
    outcome: Outcome


@dataclass(frozen=True)
class Failed:
    slot: int
    task: str
    trial_hash: str
    reason: str
    error: str


@dataclass(frozen=True)
class Skipped:
    """The trial is another invocation's: `elsewhere` is "done" (it finished there) or "running"."""

    slot: int
    task: str
    trial_hash: str
    elsewhere: str


@dataclass(frozen=True)
class StoreFailed:
    slot: int
    task: str
    message: str  # the StoreError's: names the store and what to do


@dataclass(frozen=True)
class Killed:
    slot: int
    task: str


@dataclass(frozen=True)
class Done:
    slot: int
    task: str


Event = Ready | Started | Epoch | Finished | Failed | Skipped | StoreFailed | Killed | Done
