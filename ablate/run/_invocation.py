"""What every `ablate run` invocation shares, whatever it trains (a study's trials, its rounds of adaptive seeds, a
search): the parent run, created before any worker starts and closed with the counts however the invocation ends;
the workers, held while the parent run's heartbeat beats; the size of the packs trials train in; and the settling of
each arm's saved models once its seeds are done.

Ctrl-C or SIGTERM end the parent run KILLED, an error FAILED, and a store that failed is said so (StoreError) once
the workers have stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ablate._timeline import mark
from ablate.design import Trial
from ablate.errors import StoreError
from ablate.run._backend import Backend
from ablate.run._dispatch import Dispatcher, Reporter, RunSummary, killed_error
from ablate.run._faults import faults_from_env
from ablate.run._prepare import Prepared
from ablate.run._slots import Slot, hardware
from ablate.run._worker import WorkerConfig
from ablate.spec import Study
from ablate.tracking import DATA_DIR, IMPORT_PATHS, PID, PID_START, Heartbeat, Identity

if TYPE_CHECKING:
    from ablate.tracking import Tracker


AUTO_PACK_GPU, AUTO_PACK_CPU, AUTO_PACK_GAIN = 8, 4, 1.15


def pack_size(pack: int | str, slots: list[Slot], notes: list[str]) -> int | Callable[[list[Trial]], int]:
    """[execution] pack as pack_trials takes it. `auto`: on GPUs packs of up to AUTO_PACK_GPU (packing pays there,
    results/gpu.md); on the CPU, per architecture, packs of up to AUTO_PACK_CPU where a probe (ablate.engine's
    packed_speedup, with a worker's threads, on this machine) finds a trial AUTO_PACK_GAIN× faster packed. What it
    chose goes into `notes`."""
    if pack != "auto":
        return int(pack)
    if slots and slots[0].device.startswith("cuda"):
        return lambda group: min(len(group), AUTO_PACK_GPU)

    def probed(group: list[Trial]) -> int:
        import torch

        from ablate.engine import packed_speedup

        k = min(len(group), AUTO_PACK_CPU)
        gain = packed_speedup([t.settings for t in group[:k]], torch.device("cpu"), slots[0].threads if slots else 1)
        chosen = k if gain >= AUTO_PACK_GAIN else 1
        notes.append(f"pack = auto: {group[0].architecture}: a trial trains {gain:.2f}× as fast packed by {k} "
                     f"(probe), so {f'packs of {k}' if chosen > 1 else 'alone'}")
        return chosen

    return probed


def settle_arms(tracker: Tracker, summary: RunSummary, trials: list[Trial], study: Study) -> None:
    """Once an arm's seeds are all done, its best run's model stands for it (ablate.tracking's models)."""
    from ablate.tracking import settle_models

    if not stopped(summary):
        settle_models(tracker, summary.experiment_id, trials, study.tracking.models)


@dataclass
class Invocation:
    """This `ablate run`: its parent run (created before any worker starts), the heartbeat that proves it alive
    while its workers work, and what they need."""

    parent_id: str
    config: WorkerConfig
    heartbeat: Heartbeat

    @classmethod
    def start(cls, prepared: Prepared, experiment_id: str, trials: int, slots: list[Slot], command: str,
              tags: dict[str, str]) -> Invocation:
        from ablate.tracking import environment_tags

        study, tracker = prepared.study, prepared.tracker
        env_tags = environment_tags(Path(study.path).resolve().parent)
        machine = hardware(slots)
        data_dir = str(Path(prepared.data_dir).resolve())
        sources = {DATA_DIR: data_dir, IMPORT_PATHS: json.dumps(list(prepared.import_paths))}  # for the report
        parent_id = tracker.start_parent(
            experiment_id, study.name, Path(study.path), trials,
            {**env_tags, "command": command, "hardware": machine, **sources, **tags},
        )
        config = WorkerConfig(
            tracking_uri=tracker.uri, experiment_id=experiment_id, parent_run_id=parent_id,
            parent=Identity.of_this_process(),
            env_tags={k: v for k, v in env_tags.items() if k not in (PID, PID_START)} | {"hardware": machine},
            data_dir=data_dir, import_paths=prepared.import_paths,
            faults=faults_from_env(),
            models=study.tracking.models, claims=tracker.claims.url,
            data=tuple(dict.fromkeys((t.settings.dataset, t.settings.data) for t in prepared.trials)),
            graphs=study.execution.graphs,
        )
        return cls(parent_id, config, Heartbeat(lambda: tracker.beat([parent_id])))


@contextmanager
def dispatching(invocation: Invocation, make_backend: Callable[[], Backend], tracker: Tracker, reporter: Reporter,
                 summary: RunSummary) -> Iterator[Dispatcher]:
    """A dispatcher on the backend's workers while the invocation's heartbeat beats; the workers shut down after."""
    with invocation.heartbeat:
        dispatcher = Dispatcher(make_backend(), tracker, reporter, summary)
        mark("workers started")
        try:
            yield dispatcher
        finally:
            dispatcher.close()


@contextmanager
def closing_parent(tracker: Tracker, summary: RunSummary, started: float) -> Iterator[None]:
    """The parent run ends however the invocation does: with its counts, KILLED when interrupted before the
    dispatcher could say so, FAILED on an error. A failed store (a worker's StoreFailed) is raised as StoreError.
    The block holds the workers (dispatching): when it ends they are gone, so an interrupted invocation's trial
    runs still RUNNING are ended KILLED here (_end_left_running) before the parent run."""
    try:
        yield
    except BaseException as exc:
        summary.interrupted = summary.interrupted or isinstance(exc, KeyboardInterrupt)
        summary.wall_seconds = time.perf_counter() - started
        if not isinstance(exc, StoreError):
            _end_left_running(tracker, summary)
            _close_parent(tracker, summary, None if summary.interrupted else f"{type(exc).__name__}: {exc}")
        raise
    summary.wall_seconds = time.perf_counter() - started
    if summary.store_error is not None:
        raise StoreError(summary.store_error)
    _end_left_running(tracker, summary)
    _close_parent(tracker, summary)


def _end_left_running(tracker: Tracker, summary: RunSummary) -> None:
    """An interrupted invocation's trial runs that no one ended: a worker stopped where it could not record its
    run (Ctrl-C just after it created the run, before the dispatcher heard of it) leaves it RUNNING. They end
    KILLED, as the running trials do; only RUNNING runs are touched. A store that fails here leaves them to the
    next invocation, which recovers them."""
    if not summary.interrupted:
        return
    reason = summary.stop_reason
    try:
        tracker.end_left_running(summary.experiment_id, summary.parent_run_id, "KILLED", killed_error(reason), reason)
    except StoreError:
        pass


def _close_parent(tracker: Tracker, summary: RunSummary, error: str | None = None) -> None:
    try:
        _write_parent_end(tracker, summary, error)
    except StoreError:
        if error is None and summary.store_error is None:
            raise  # the store failed here, not before: that is the news


def _write_parent_end(tracker: Tracker, summary: RunSummary, error: str | None) -> None:
    counts = {
        "trials_finished": str(len(summary.finished)),
        "trials_failed": str(len(summary.failed)),
        "trials_skipped": str(summary.skipped),
        "wall_seconds": f"{summary.wall_seconds:.1f}",
        "workers": str(len(summary.slots)),
    }
    for key, value in counts.items():
        tracker.set_tag(summary.parent_run_id, key, value)
    status = "KILLED" if summary.interrupted else ("FAILED" if summary.failed or error else "FINISHED")
    reason = summary.stop_reason if summary.interrupted else None
    tracker.finish(summary.parent_run_id, status, error=error, reason=reason)



def record_changed_plan(prepared: Prepared, summary: RunSummary, trials: list[Trial], command: str,
                        started: float) -> None:
    """An invocation with nothing to train records the study as it now stands, in a parent run of its own with no
    trials, when that differs from the plan the latest parent run carries — an arm removed, seeds, [stats] or the
    adaptive design edited, or another study file of the same name run in between: the report reads the latest
    plan, and would otherwise go on showing the study as it was. Nothing is recorded when nothing changed."""
    from ablate.design import plan_document
    from ablate.tracking import PLAN_ARTIFACT, latest_plan, parent_runs

    tracker = prepared.tracker
    document = plan_document(prepared.study, trials)
    if json.loads(json.dumps(document)) == latest_plan(tracker, parent_runs(tracker, summary.experiment_id)):
        return
    invocation = Invocation.start(prepared, summary.experiment_id, len(trials), summary.slots, command, {})
    summary.parent_run_id = invocation.parent_id
    with closing_parent(tracker, summary, started):
        tracker.log_dict(invocation.parent_id, document, PLAN_ARTIFACT)
    summary.notes.append("nothing to train; the study as it now stands is recorded for the report (its plan "
                         "differs from the one its latest run recorded)")


def stopped(summary: RunSummary) -> bool:
    return summary.interrupted or summary.store_error is not None

