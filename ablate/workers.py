"""Worker processes: each bound to one device for its life, fed one trial at a time by the parent.

The parent hands a trial to a worker only when the worker is idle, so it always knows which
trial each worker holds: when a worker dies (kill -9, a segfault, the OOM killer) that trial
is recorded FAILED with reason `worker-lost`, a fresh worker takes the slot, and the other
workers never notice. (joblib's loky executor treats one dead worker as a broken pool and
terminates the others mid-trial, which is why ablate supervises its own processes; joblib
supplies the core count, which honours cgroup CPU limits.)

A worker logs its own trials to MLflow as child runs of the parent run, with an explicit
run id, and reports progress to the parent as small events on a pipe of its own; the worker loop takes
only picklable inputs, so it can later run under a cluster engine or on other machines.
"""

from __future__ import annotations

import gc
import json
import math
import multiprocessing
import os
import platform
import queue
import signal
import sys
import traceback
from collections import deque
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait as connection_wait
from pathlib import Path
from typing import Any

from ablate.design import Pack, Trial, task_key, task_trials
from ablate.errors import AblateError

# Failure reasons, recorded as the `reason` tag of a FAILED (or KILLED) run.
ERROR, DIVERGED, OOM, WORKER_LOST, INTERRUPTED = "error", "diverged", "oom", "worker-lost", "interrupted"

OUTPUTS_ARTIFACT = "test_outputs.npz"  # predictions, confidences and, for a linear model, its weights

# Test-only fault injection, as JSON: {"<stage>:<seed>": "raise" | "nan" | "oom" | "kill" | "kill-mid-event" | "slow"}.
FAULTS_ENV = "ABLATE_TEST_FAULTS"


@dataclass(frozen=True)
class Slot:
    """One worker's place: its index, its device ('cpu' or 'cuda:N') and its torch CPU threads."""

    index: int
    device: str
    threads: int


def plan_slots(
    devices: str | tuple[int, ...], workers_per_device: int | None, max_workers: int | None, cuda_count: int,
    cpu_cores: int,
) -> list[Slot]:
    """Worker slots for the devices asked for and the devices visible.

    `auto` is every visible GPU, else the CPU. Slots go round-robin over the devices, so a
    `max_workers` below the total still spreads over every GPU. A CPU worker uses one torch
    thread — float sums in another order would make a result depend on the worker count —
    and by default there is one per core; GPU workers share the cores out between them.
    """
    if devices == "cpu" or (devices == "auto" and cuda_count == 0):
        names = ["cpu"]
    elif devices == "auto":
        names = [f"cuda:{i}" for i in range(cuda_count)]
    else:
        missing = [i for i in devices if i >= cuda_count]
        if missing:
            visible = f"{cuda_count} visible" if cuda_count else "none visible"
            raise AblateError(f"devices {list(devices)}: there is no GPU {missing[0]} here ({visible})")
        names = [f"cuda:{i}" for i in dict.fromkeys(devices)]
    on_cpu = names == ["cpu"]
    per_device = workers_per_device or (cpu_cores if on_cpu else 1)
    count = len(names) * per_device
    if max_workers is not None:
        count = min(count, max_workers)
    threads = 1 if on_cpu else max(1, cpu_cores // count)
    return [Slot(index=k, device=names[k % len(names)], threads=threads) for k in range(count)]


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs besides its slot and its trials; picklable."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    env_tags: dict[str, str]
    data_dir: str
    import_paths: tuple[str, ...]  # where custom model factories are found
    parent_pid: int
    parent_start: str | None = None  # the parent's start time, so a recycled pid is not taken for it
    faults: dict[str, str] = field(default_factory=dict)


def faults_from_env() -> dict[str, str]:
    raw = os.environ.get(FAULTS_ENV)
    return json.loads(raw) if raw else {}


# ---------------------------------------------------------------------------- inside a worker


class Orphaned(Exception):
    """The parent process is gone (killed): stop, record the trial as interrupted, exit."""


class EventChannel:
    """A worker's events to the parent, written straight into a pipe only this worker writes to.

    Not a shared multiprocessing.Queue: its writers share one lock, taken by a background feeder
    thread, and a worker killed while holding it (kill -9, the OOM killer) would silence every other
    worker for good, leaving the parent waiting forever for news of finished trials."""

    def __init__(self, connection):
        self.connection = connection

    def put(self, event: tuple) -> None:
        try:
            self.connection.send(event)
        except OSError as exc:  # a broken pipe: nobody reads any more, the parent is gone
            raise Orphaned() from exc


def worker_main(slot: Slot, config: WorkerConfig, tasks, events: EventChannel) -> None:
    """A worker's life: set up its device once, then train trials until told to stop."""
    import torch

    from ablate.tracking import Tracker

    torch.set_num_threads(slot.threads)
    sys.path[:0] = [p for p in config.import_paths if p not in sys.path]
    device = torch.device(slot.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tracker = Tracker(config.tracking_uri)
    events.put(("ready", slot.index, os.getpid()))
    while True:
        try:
            trial = tasks.get(timeout=1.0)
        except queue.Empty:
            if _orphaned(config):
                return
            continue
        if trial is None:
            return
        try:
            if isinstance(trial, Trial):
                _run_one(trial, slot, config, tracker, device, events)
            elif isinstance(trial, Pack):
                _run_pack(trial, slot, config, tracker, device, events)
            else:
                _run_search_one(trial, slot, config, tracker, device, events)
        except (KeyboardInterrupt, Orphaned):
            return
        events.put(("done", slot.index, task_key(trial)))


def _start_run(trial: Trial, slot: Slot, config: WorkerConfig, tracker, key: str, events, **tags: str) -> str:
    run_id = tracker.start_trial(config.experiment_id, config.parent_run_id, trial, {
        **config.env_tags, "device": slot.device, "worker": str(slot.index), "pid": str(os.getpid()), **tags,
    })
    events.put(("started", slot.index, key, run_id, trial))
    return run_id


def _trial_settings(trial: Trial, config: WorkerConfig):
    fault = config.faults.get(f"{trial.stage}:{trial.seed}")
    settings = trial.settings
    if fault == "nan":  # an infinite learning rate: the loss is NaN within a few steps
        settings = replace(settings, train=replace(settings.train, lr=math.inf))
    return settings, fault


def _epoch_done(trial: Trial, slot: Slot, config: WorkerConfig, tracker, run_id: str, key: str, events,
                fault: str | None, epoch: int, metrics: dict[str, float]) -> None:
    tracker.log_metrics(run_id, metrics, step=epoch)
    events.put(("epoch", slot.index, key, epoch, metrics["val_accuracy"], trial.hash))
    if _orphaned(config):
        raise Orphaned()
    _inject(fault, epoch, events)


def _record_failure(exc: BaseException, trial: Trial, slot: Slot, tracker, run_id: str, key: str, events,
                    trace: str) -> None:
    reason = classify(exc)
    tracker.client.log_text(run_id, trace, "traceback.txt")
    message = f"{type(exc).__name__}: {exc}"
    tracker.finish(run_id, "FAILED", error=message, reason=reason)
    events.put(("failed", slot.index, key, reason, message, trial.hash))


def _record_result(trial: Trial, slot: Slot, tracker, run_id: str, key: str, events, result, device) -> None:
    tracker.log_metrics(run_id, {**result.final_metrics(), "peak_memory_mb": _peak_memory_mb(device)},
                        step=len(result.history))
    _log_outputs(tracker, run_id, result)
    tracker.finish(run_id)
    events.put(("finished", slot.index, key, {"test_accuracy": result.test_accuracy,
                                              "train_seconds": result.train_seconds}, trial.hash))


def _record_interrupted(exc: BaseException, run_ids: list[str], slot: Slot, tracker, key: str, events) -> None:
    """Ctrl-C ends the task's open runs KILLED (and tells the parent); a vanished parent ends them FAILED."""
    if isinstance(exc, KeyboardInterrupt):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the bookkeeping short
        for run_id in run_ids:
            tracker.finish(run_id, "KILLED", error="interrupted (Ctrl-C)", reason=INTERRUPTED)
        events.put(("killed", slot.index, key))
    else:
        for run_id in run_ids:
            tracker.finish(run_id, "FAILED", error="the ablate run that started this trial is gone", reason=INTERRUPTED)


def _load_data(settings, config: WorkerConfig, device):
    from ablate import data as datasets

    dataset = datasets.load(settings.dataset, settings.data, Path(config.data_dir), device)
    if device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    return dataset


def _run_one(trial: Trial, slot: Slot, config: WorkerConfig, tracker, device, events) -> None:
    from ablate.train import train_trial

    key = trial.hash
    run_id = _start_run(trial, slot, config, tracker, key, events)
    settings, fault = _trial_settings(trial, config)
    try:
        result = train_trial(settings, _load_data(settings, config, device), device,
                             lambda epoch, metrics: _epoch_done(trial, slot, config, tracker, run_id, key, events,
                                                                fault, epoch, metrics))
    except (KeyboardInterrupt, Orphaned) as exc:
        _record_interrupted(exc, [run_id], slot, tracker, key, events)
        raise
    except Exception as exc:
        _record_failure(exc, trial, slot, tracker, run_id, key, events, traceback.format_exc())
        _free_memory(device)
        return
    _record_result(trial, slot, tracker, run_id, key, events, result, device)


def _run_pack(pack: Pack, slot: Slot, config: WorkerConfig, tracker, device, events) -> None:
    """K trials trained as one packed network (ablate.pack), each logged to its own run as if it ran alone and
    recorded as soon as it ends."""
    from ablate.pack import train_pack

    key, trials = pack.key, pack.trials
    run_ids = [_start_run(t, slot, config, tracker, key, events, pack=key, pack_size=str(len(trials)))
               for t in trials]
    prepared = [_trial_settings(t, config) for t in trials]
    open_runs = dict(enumerate(run_ids))  # the trials not yet recorded

    def on_epoch(i: int, epoch: int, metrics: dict[str, float]) -> None:
        _epoch_done(trials[i], slot, config, tracker, run_ids[i], key, events, prepared[i][1], epoch, metrics)

    def on_end(i: int, result) -> None:
        del open_runs[i]
        if isinstance(result, BaseException):  # this trial alone diverged
            _record_failure(result, trials[i], slot, tracker, run_ids[i], key, events, f"{type(result).__name__}: {result}\n")
        else:
            _record_result(trials[i], slot, tracker, run_ids[i], key, events, result, device)

    try:
        settings = [s for s, _ in prepared]
        train_pack(settings, _load_data(settings[0], config, device), device, on_epoch, on_end=on_end)
    except (KeyboardInterrupt, Orphaned) as exc:
        _record_interrupted(exc, list(open_runs.values()), slot, tracker, key, events)
        raise
    except Exception as exc:  # the pack failed (out of memory, a bug): each of its trials still open did
        trace = traceback.format_exc()
        for i, run_id in list(open_runs.items()):
            _record_failure(exc, trials[i], slot, tracker, run_id, key, events, trace)
        _free_memory(device)


_PARSED: dict[str, Any] = {}


def _run_search_one(task, slot: Slot, config: WorkerConfig, tracker, device, events) -> None:
    """Ask the shared Optuna storage for a trial, train it with pruning, tell the storage how it went."""
    import optuna

    from ablate import data as datasets
    from ablate import search
    from ablate.design import trial_for
    from ablate.spec import parse_study, resolve_point
    from ablate.tracking import process_start
    from ablate.train import train_trial

    if task.study_text not in _PARSED:
        _PARSED[task.study_text] = parse_study(task.study_text, task.study_path)
    study = _PARSED[task.study_text]
    spec = study.search
    objective = spec.settings.objective
    epochs = resolve_point(study, ()).train.epochs
    optuna_study = search.open_study(spec, task.storage, study.name, epochs, task.index)
    asked = optuna_study.ask()
    point = search.suggest(asked, spec.space)
    for key, value in ((search.POINT_ATTR, [list(p) for p in point]), (search.HOST_ATTR, platform.node()),
                       (search.PID_ATTR, os.getpid()), (search.PID_START_ATTR, process_start(os.getpid()) or "")):
        asked.set_user_attr(key, value)
    trial = trial_for(study, resolve_point(study, point, index=asked.number), spec.seeds[0],
                      changes=f"Optuna trial {asked.number}")
    run_id = tracker.start_trial(config.experiment_id, config.parent_run_id, trial, {
        **config.env_tags, "device": slot.device, "worker": str(slot.index), "pid": str(os.getpid()),
        "optuna_trial": str(asked.number),
    }, role="search")
    asked.set_user_attr(search.RUN_ATTR, run_id)
    events.put(("started", slot.index, task.key, run_id, trial))

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(run_id, metrics, step=epoch)
        events.put(("epoch", slot.index, task.key, epoch, metrics["val_accuracy"], trial.hash))
        if _orphaned(config):
            raise Orphaned()
        asked.report(metrics[objective], epoch)
        if asked.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    def close(state: str, status: str, **finish) -> None:
        tracker.client.set_tag(run_id, "optuna_state", state)
        tracker.finish(run_id, status, **finish)

    try:
        dataset = datasets.load(trial.settings.dataset, trial.settings.data, Path(config.data_dir), device)
        result = train_trial(trial.settings, dataset, device, on_epoch, test=False)
    except optuna.TrialPruned as exc:
        epoch = int(str(exc).rsplit(" ", 1)[-1])
        optuna_study.tell(asked, state=optuna.trial.TrialState.PRUNED)
        tracker.log_metrics(run_id, {"pruned_at_epoch": epoch}, step=epoch)
        close("PRUNED", "FINISHED")
        events.put(("finished", slot.index, task.key, {"summary": f"pruned after epoch {epoch}"}, trial.hash))
        return
    except (KeyboardInterrupt, Orphaned) as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        asked.set_user_attr(search.INTERRUPTED_ATTR, True)  # its parameters are tried again on resume
        optuna_study.tell(asked, state=optuna.trial.TrialState.FAIL)
        optuna_study.enqueue_trial(asked.params, skip_if_exists=False)
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        close("FAIL", status, error="interrupted", reason=INTERRUPTED)
        if isinstance(exc, KeyboardInterrupt):
            events.put(("killed", slot.index, task.key))
        raise
    except Exception as exc:
        reason = classify(exc)
        tracker.client.log_text(run_id, traceback.format_exc(), "traceback.txt")
        optuna_study.tell(asked, state=optuna.trial.TrialState.FAIL)
        message = f"{type(exc).__name__}: {exc}"
        close("FAIL", "FAILED", error=message, reason=reason)
        _free_memory(device)
        events.put(("failed", slot.index, task.key, reason, message, trial.hash))
        return
    value = result.history[result.tested_epoch - 1][objective]
    optuna_study.tell(asked, value)
    final = {k: v for k, v in result.final_metrics().items() if not k.startswith("test_")}
    tracker.log_metrics(run_id, {**final, "objective": value}, step=len(result.history))
    close("COMPLETE", "FINISHED")
    events.put(("finished", slot.index, task.key, {"summary": f"{objective} {value:.4f} (Optuna trial {asked.number})"},
                trial.hash))


def _orphaned(config: WorkerConfig) -> bool:
    """Is the `ablate run` that started this worker gone? (Workers are not its direct children under forkserver.)"""
    from ablate.tracking import invocation_alive

    return not invocation_alive({"host": platform.node(), "pid": str(config.parent_pid),
                                 "pid_start": config.parent_start or ""})


def _log_outputs(tracker, run_id: str, result) -> None:
    """Test predictions (and a linear model's weights) as a small artifact, for the report's figures."""
    import tempfile

    import numpy as np

    if result.predictions is None:
        return
    arrays = {"predictions": result.predictions, "confidences": result.confidences}
    if result.weights is not None:
        arrays["weights"] = result.weights
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / OUTPUTS_ARTIFACT
        np.savez_compressed(path, **arrays)
        tracker.client.log_artifact(run_id, str(path))


def _peak_memory_mb(device) -> float:
    """Peak device memory the trial allocated (GPU), or the worker process's peak resident memory (CPU)."""
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kilobytes


def classify(exc: BaseException) -> str:
    """The `reason` of a failed trial: diverged, oom or error."""
    import torch

    from ablate.train import Diverged

    if isinstance(exc, Diverged):
        return DIVERGED
    if isinstance(exc, torch.cuda.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc)):
        return OOM
    return ERROR


def _free_memory(device) -> None:
    """Drop what the failed trial held, so the worker's next trial starts with the device's memory free."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _inject(fault: str | None, epoch: int, events: EventChannel) -> None:
    """Test-only faults, fired at the end of the first epoch (after the trial's run exists)."""
    if fault is None or epoch != 1:
        return
    import time

    import torch

    if fault == "kill-mid-event":  # die halfway through writing an event, as a kill -9 can land
        os.write(events.connection.fileno(), (1 << 20).to_bytes(4, "big") + b"an unfinished event")
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "raise":
        raise RuntimeError("injected fault")
    if fault == "oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "slow":
        time.sleep(float(os.environ.get("ABLATE_TEST_SLOW_SECONDS", "30")))


# ---------------------------------------------------------------------------- the parent's side


def _context():
    """Workers fork from a server process that has imported torch, MLflow and ablate once (a worker starts in a
    fraction of a second instead of seconds); the server never touches CUDA, so forking it is safe. Where there is
    no forkserver, workers spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ablate.workers", "ablate.train", "ablate.tracking", "ablate.data"])
    return context


@dataclass
class _Worker:
    slot: Slot
    process: Any
    tasks: Any
    events: Any  # the reading end of the worker's event pipe
    task: Any = None  # a Trial, a Pack of trials, or a search task (whose Trial is known once it asked Optuna)
    open: dict[str, list] = field(default_factory=dict)  # trial hash → [trial, run id or None], not yet ended
    stopping: bool = False

    @property
    def key(self) -> str | None:
        return None if self.task is None else task_key(self.task)

    def clear(self) -> None:
        self.task, self.open = None, {}


class Pool:
    """Start one process per slot and feed them trials; report what happens through `on_event`."""

    def __init__(self, slots: list[Slot], config: WorkerConfig):
        self.context = _context()
        self.config = config
        self.received: deque = deque()  # events read from the pipes, not yet handed out
        self.workers = {slot.index: self._start(slot) for slot in slots}

    def _start(self, slot: Slot) -> _Worker:
        tasks = self.context.Queue()
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=worker_main, args=(slot, self.config, tasks, EventChannel(writer)),
            name=f"ablate-worker-{slot.index}", daemon=True,
        )
        process.start()
        writer.close()  # the worker holds the only writing end, so its death reads as end-of-file here
        return _Worker(slot, process, tasks, reader)

    def give(self, worker: _Worker, task) -> None:
        worker.task = task
        worker.open = {t.hash: [t, None] for t in task_trials(task)}
        worker.tasks.put(task)
        worker.stopping = task is None

    def busy(self) -> list[_Worker]:
        return [w for w in self.workers.values() if w.task is not None]

    def idle(self) -> list[_Worker]:
        return [w for w in self.workers.values() if w.task is None and not w.stopping]

    def next_event(self, timeout: float):
        """The next event from any worker, or None after `timeout` seconds without one."""
        if not self.received:
            self._receive(timeout)
        return self.received.popleft() if self.received else None

    def _receive(self, timeout: float) -> None:
        open_readers = {w.events: w for w in self.workers.values() if not w.events.closed}
        for reader in connection_wait(list(open_readers), timeout):
            try:
                self.received.append(reader.recv())
            except (EOFError, OSError):  # the worker is gone; dead() will say so
                reader.close()

    def drain(self) -> list:
        found = []
        while (event := self.next_event(0.0)) is not None:
            found.append(event)
        return found

    def dead(self) -> list[_Worker]:
        """Workers that died unasked, or while still holding a task (so the loop never waits on a dead one)."""
        return [w for w in self.workers.values()
                if not w.process.is_alive() and (not w.stopping or w.task is not None)]

    def replace(self, worker: _Worker) -> _Worker:
        """A fresh process for a dead worker's slot."""
        worker.process.join(timeout=1)
        worker.events.close()
        fresh = self._start(worker.slot)
        self.workers[worker.slot.index] = fresh
        return fresh

    def interrupt(self) -> None:
        """Ctrl-C reaches workers through the terminal; a signal sent to the parent alone is passed on."""
        for worker in self.busy():
            if worker.process.is_alive():
                try:
                    os.kill(worker.process.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass

    def shutdown(self, timeout: float = 10.0) -> None:
        for worker in self.workers.values():
            if worker.process.is_alive() and not worker.stopping:
                worker.tasks.put(None)
                worker.stopping = True
        for worker in self.workers.values():
            worker.process.join(timeout=timeout)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=2)
