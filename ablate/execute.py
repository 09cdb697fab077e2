"""Run a study's trials on worker processes: skip finished ones, train the rest, record every outcome.

The parent creates the experiment and the parent run before any worker starts (concurrent
first use of a SQLite store races), recovers runs a killed invocation left RUNNING, then
hands trials to the workers one at a time (ablate.workers) and turns their events into the
summary and the progress display.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ablate import data as datasets
from ablate import sizes
from ablate.design import Pack, Trial, pack_trials, task_trials
from ablate.spec import DATASETS, ExecutionSettings, Study
from ablate.tracking import PLAN_ARTIFACT, Tracker, environment_tags, process_start
from ablate.workers import WORKER_LOST, Pool, Slot, WorkerConfig, faults_from_env, plan_slots

# A slot whose workers keep dying before finishing anything is not worth restarting forever.
MAX_LOST_IN_A_ROW = 3


class Reporter(Protocol):
    """What a run tells its user; the CLI draws it, tests can record it."""

    def start(self, total: int, skipped: int, slots: list[Slot]) -> None: ...
    def trial_started(self, trial: Trial, slot: Slot) -> None: ...
    def epoch(self, trial: Trial, slot: Slot, epoch: int, val_accuracy: float) -> None: ...
    def trial_finished(self, trial: Trial, slot: Slot, outcome: dict[str, float]) -> None: ...
    def trial_failed(self, trial: Trial, slot: Slot, reason: str, error: str) -> None: ...


@dataclass
class RunSummary:
    experiment_id: str
    parent_run_id: str | None
    total: int
    skipped: int
    finished: list[tuple[Trial, dict[str, float]]] = field(default_factory=list)
    failed: list[tuple[Trial, str, str]] = field(default_factory=list)  # (trial, reason, error)
    recovered: list[dict[str, str]] = field(default_factory=list)  # runs a killed invocation left RUNNING
    running_elsewhere: int = 0
    interrupted: bool = False
    wall_seconds: float = 0.0
    slots: list[Slot] = field(default_factory=list)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "CPU"


def hardware(slots: list[Slot]) -> str:
    """The processors a run used and how it used them, as a results table should name them."""
    import torch

    devices = sorted({s.device for s in slots})
    if devices == ["cpu"]:
        return f"{cpu_model()}, {len(slots)} worker(s) × {slots[0].threads} thread(s)"
    names = sorted({torch.cuda.get_device_name(torch.device(d)) for d in devices})
    per = len(slots) // len(devices)
    return f"{len(devices)} × {', '.join(names)} (CUDA {torch.version.cuda}), {per} worker(s) per GPU"


def plan_slots_for(execution: ExecutionSettings) -> list[Slot]:
    import joblib
    import torch

    return plan_slots(execution.devices, execution.workers_per_device, execution.max_workers,
                      torch.cuda.device_count(), joblib.cpu_count())


def plan_document(study: Study, trials: list[Trial], arms: tuple | None = None) -> dict:
    """The study's full trial list, logged on each parent run so reports know the current design."""
    stages = {}
    for t in trials:
        stage = (arms or study.stages)[t.stage_index]
        stages.setdefault(
            t.stage,
            {
                "name": t.stage,
                "index": t.stage_index,
                "description": stage.description,
                "reference": stage.reference,
                "changes": t.changes,
                "architecture": t.architecture,
                "params_count": t.params_count,
                "macs": sizes.macs(t.settings.model, DATASETS[t.settings.dataset]),
            },
        )
    return {
        "study": study.name,
        "design": study.info.design,
        "baseline": study.info.baseline if study.info.design != "ablation" else None,  # ablation: its first arm
        "description": study.info.description,
        "stages": list(stages.values()),
        "trials": [{"hash": t.hash, "stage": t.stage, "seed": t.seed} for t in trials],
    }


def run_study(
    study: Study, trials: list[Trial], tracker: Tracker, data_dir: Path, execution: ExecutionSettings,
    reporter: Reporter, command: str = "", import_paths: tuple[str, ...] = (),
) -> RunSummary:
    started = time.perf_counter()
    slots = plan_slots_for(execution)
    for dataset in {t.settings.dataset for t in trials}:  # bad input stops the run before the store is touched
        datasets.ensure_files(dataset, data_dir)
    experiment_id = tracker.experiment(study.name)
    recovered, elsewhere = tracker.recover_stale(experiment_id)
    done = tracker.finished_hashes(experiment_id)
    todo = [t for t in trials if t.hash not in done and t.hash not in elsewhere]
    tasks = pack_trials(todo, execution.pack)
    slots = slots[: max(1, len(tasks))]  # no idle workers
    summary = RunSummary(experiment_id, None, total=len(trials), skipped=len(trials) - len(todo),
                         recovered=recovered, running_elsewhere=len(elsewhere & {t.hash for t in trials}), slots=slots)
    reporter.start(len(trials), summary.skipped, slots)
    if not todo:
        return summary
    parent_id, config = _start_invocation(study, tracker, experiment_id, len(trials), slots, command, {},
                                          data_dir, import_paths)
    summary.parent_run_id = parent_id
    tracker.client.log_dict(parent_id, plan_document(study, trials), PLAN_ARTIFACT)
    _Dispatcher(Pool(slots, config), tasks, tracker, reporter, summary).run()
    summary.wall_seconds = time.perf_counter() - started
    _close_parent(tracker, summary)
    return summary


def _pid() -> int:
    import os

    return os.getpid()


def _start_invocation(
    study: Study, tracker: Tracker, experiment_id: str, trials: int, slots: list[Slot], command: str,
    tags: dict[str, str], data_dir: Path, import_paths: tuple[str, ...],
) -> tuple[str, WorkerConfig]:
    """The parent run of this `ablate run` (before any worker starts) and what its workers need."""
    env_tags = environment_tags(Path(study.path).resolve().parent)
    machine = hardware(slots)
    parent_id = tracker.start_parent(
        experiment_id, study.name, Path(study.path), trials, {**env_tags, "command": command, "hardware": machine, **tags}
    )
    config = WorkerConfig(
        tracking_uri=tracker.uri, experiment_id=experiment_id, parent_run_id=parent_id,
        env_tags={k: v for k, v in env_tags.items() if k not in ("pid", "pid_start")} | {"hardware": machine},
        data_dir=str(Path(data_dir).resolve()), import_paths=import_paths, parent_pid=_pid(),
        parent_start=process_start(_pid()), faults=faults_from_env(),
    )
    return parent_id, config


class _Dispatcher:
    """The parent's loop: hand out trials, react to worker events, notice dead workers, handle Ctrl-C."""

    def __init__(self, pool: Pool, todo: list, tracker: Tracker, reporter: Reporter, summary: RunSummary,
                 timeout: float | None = None):
        self.pool, self.tracker, self.reporter, self.summary = pool, tracker, reporter, summary
        self.pending = deque(todo)  # trials, or search tasks
        self.lost_in_a_row = 0
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def run(self, shutdown: bool = True) -> None:
        try:
            self._replace_lost_before()
            for worker in self.pool.idle():
                self._feed(worker)
            while self.pool.busy():
                event = self.pool.next_event(timeout=0.5)
                if event is not None:
                    self._handle(event)
                self._check_dead()
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self._stop_running()
        finally:
            if shutdown or self.summary.interrupted:
                self.pool.shutdown()

    def _replace_lost_before(self) -> None:
        """Workers that died idle in an earlier phase (a search's confirm runs come after its trials) were left
        stopped, as there was nothing to give them then; this phase has work for their slots."""
        for worker in list(self.pool.workers.values()):
            if self.pending and worker.stopping and not worker.process.is_alive():
                self.pool.replace(worker)

    def _feed(self, worker) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.pending.clear()  # a search's timeout: start nothing new
        if self.pending:
            self.pool.give(worker, self.pending.popleft())
        else:
            worker.clear()  # idle until the next phase, or until the pool shuts down

    def _worker(self, slot_index: int):
        return self.pool.workers[slot_index]

    def _handle(self, event: tuple) -> None:
        """Events name the task (rest[0]) and, after `started`, the trial; a pack's trials end one by one and
        its worker is free at `done`."""
        kind, slot_index, *rest = event
        worker = self._worker(slot_index)
        if kind == "ready" or worker.task is None or (rest and rest[0] != worker.key):
            return  # a worker starting up, or news of a task this worker no longer holds
        if kind == "started":
            trial = rest[2]
            worker.open[trial.hash] = [trial, rest[1]]
            self.reporter.trial_started(trial, worker.slot)
        elif kind == "epoch" and rest[3] in worker.open:
            self.reporter.epoch(worker.open[rest[3]][0], worker.slot, rest[1], rest[2])
        elif kind == "finished" and rest[2] in worker.open:
            trial, _ = worker.open.pop(rest[2])
            self.summary.finished.append((trial, rest[1]))
            self.lost_in_a_row = 0
            self.reporter.trial_finished(trial, worker.slot, rest[1])
        elif kind == "failed" and rest[3] in worker.open:
            trial, _ = worker.open.pop(rest[3])
            self._failed(trial, worker, rest[1], rest[2])
        elif kind == "done":
            self._feed(worker)
        elif kind == "killed":
            worker.clear()

    def _failed(self, trial: Trial, worker, reason: str, error: str) -> None:
        self.summary.failed.append((trial, reason, error))
        self.reporter.trial_failed(trial, worker.slot, reason, error)

    def _check_dead(self) -> None:
        dead = self.pool.dead()
        if not dead:
            return
        for event in self.pool.drain():  # what a worker said just before it died still counts
            self._handle(event)
        for worker in self.pool.dead():
            self._record_lost(worker)
            if not self.pending:
                worker.stopping = True  # nothing left for a new worker to do
                continue
            self.lost_in_a_row += 1
            fresh = self.pool.replace(worker)
            if self.lost_in_a_row > MAX_LOST_IN_A_ROW * len(self.pool.workers):
                self._give_up(fresh)
            else:
                self._feed(fresh)

    def _record_lost(self, worker) -> None:
        """The dead worker's trials that had started and not ended are FAILED (worker-lost). What it had not
        started (it died before, or just after being handed the task) goes back to the front of the queue."""
        error = f"the worker process died (exit code {worker.process.exitcode}) while training this trial"
        unstarted = [trial for trial, run_id in worker.open.values() if run_id is None]
        for trial, run_id in worker.open.values():
            if run_id is not None and not self._ended_unheard(trial, run_id, worker):
                self.tracker.finish(run_id, "FAILED", error=error, reason=WORKER_LOST)
                self._failed(trial, worker, WORKER_LOST, error)
        if isinstance(worker.task, Trial | Pack):
            self.pending.extendleft(reversed(pack_trials(unstarted, len(unstarted))))  # they were one pack
        elif worker.task is not None and not worker.open:  # a search task that died before drawing its trial
            self.pending.appendleft(worker.task)
        worker.clear()

    def _ended_unheard(self, trial: Trial, run_id: str, worker) -> bool:
        """Did the worker end this run (FINISHED, or FAILED with a reason) before dying, unheard? Then that stands."""
        run = self.tracker.client.get_run(run_id)
        if run.info.status == "RUNNING":
            return False
        if run.info.status == "FINISHED":
            metrics = run.data.metrics
            outcome = ({"test_accuracy": metrics["test_accuracy"], "train_seconds": metrics.get("train_seconds", 0.0)}
                       if "test_accuracy" in metrics else {"summary": "finished"})  # a search trial is never tested
            self.summary.finished.append((trial, outcome))
            self.reporter.trial_finished(trial, worker.slot, outcome)
        else:
            self._failed(trial, worker, run.data.tags.get("reason", "error"), run.data.tags.get("error", ""))
        return True

    def _give_up(self, worker) -> None:
        """Workers keep dying before they finish anything: fail what is left rather than loop forever."""
        for task in self.pending:
            for trial in task_trials(task):
                self.summary.failed.append((trial, WORKER_LOST, "not run: workers kept dying"))
        self.pending.clear()
        self.pool.give(worker, None)

    def _stop_running(self) -> None:
        """Ctrl-C: hand out nothing more; running trials end as KILLED (by their workers, else here)."""
        self.pending.clear()
        self.pool.interrupt()
        deadline = time.monotonic() + 20
        try:
            while self.pool.busy() and time.monotonic() < deadline:
                event = self.pool.next_event(timeout=0.2)
                if event is not None:
                    self._handle(event)
                for worker in self.pool.dead():
                    for event in self.pool.drain():
                        self._handle(event)
                    self._mark_killed(worker)
                    worker.stopping = True
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting
        for worker in self.pool.busy():
            worker.process.terminate()
            self._mark_killed(worker)

    def _mark_killed(self, worker) -> None:
        for _, run_id in worker.open.values():
            if run_id and self.tracker.client.get_run(run_id).info.status == "RUNNING":
                self.tracker.finish(run_id, "KILLED", error="interrupted (Ctrl-C)", reason="interrupted")
        worker.clear()


def _close_parent(tracker: Tracker, summary: RunSummary) -> None:
    counts = {
        "trials_finished": str(len(summary.finished)),
        "trials_failed": str(len(summary.failed)),
        "trials_skipped": str(summary.skipped),
        "wall_seconds": f"{summary.wall_seconds:.1f}",
        "workers": str(len(summary.slots)),
    }
    for key, value in counts.items():
        tracker.client.set_tag(summary.parent_run_id, key, value)
    status = "KILLED" if summary.interrupted else ("FAILED" if summary.failed else "FINISHED")
    tracker.finish(summary.parent_run_id, status)


def run_search(
    study: Study, tracker: Tracker, data_dir: Path, execution: ExecutionSettings, reporter: Reporter,
    storage: str, command: str = "", import_paths: tuple[str, ...] = (),
) -> RunSummary:
    """An Optuna search on the workers, then its best configurations re-trained on fresh seeds and tested."""
    from ablate import search
    from ablate.spec import resolve_point
    from ablate.tracking import invocation_alive

    started = time.perf_counter()
    spec = study.search
    datasets.ensure_files(study.info.dataset, data_dir)
    experiment_id = tracker.experiment(study.name)
    recovered, _ = tracker.recover_stale(experiment_id)
    base = resolve_point(study, ())
    optuna_study = search.open_study(spec, storage, study.name, base.train.epochs)  # created before any worker
    search.recover_stale(optuna_study, invocation_alive)
    done = search.finished_count(optuna_study)
    remaining = (spec.settings.trials - done) if spec.settings.trials else 10_000  # a timeout ends an open count
    first = len(optuna_study.trials)
    tasks = [search.SearchTask(first + i, storage, study.path, study.text) for i in range(max(0, remaining))]
    slots = plan_slots_for(execution)
    summary = RunSummary(experiment_id, None, total=done + len(tasks), skipped=done, recovered=recovered, slots=slots)
    reporter.start(summary.total, done, slots)
    if not tasks:  # the search is complete: only confirm runs may be missing
        arms, confirm, todo = _confirm_phase(study, optuna_study, tracker, experiment_id)
        if not todo:
            summary.total, summary.skipped = summary.total + len(confirm), summary.skipped + len(confirm)
            return summary
    summary.parent_run_id, config = _start_invocation(
        study, tracker, experiment_id, summary.total, slots, command,
        {"optuna_storage": storage, "optuna_study": study.name}, data_dir, import_paths,
    )
    pool = Pool(slots, config)
    _Dispatcher(pool, tasks, tracker, reporter, summary, timeout=spec.settings.timeout).run(shutdown=False)
    arms, confirm = (), []
    if not summary.interrupted:
        arms, confirm, todo = _confirm_phase(study, optuna_study, tracker, experiment_id)
        summary.total += len(confirm)
        summary.skipped += len(confirm) - len(todo)
        reporter.start(len(confirm), len(confirm) - len(todo), slots)
        _Dispatcher(pool, pack_trials(todo, execution.pack), tracker, reporter, summary).run(shutdown=False)
    pool.shutdown()
    if not summary.interrupted:  # an interrupted search has no confirm arms yet: reports keep the previous plan
        document = plan_document(study, confirm, arms)
        document["search"] = {"storage": storage, "study": study.name, "objective": spec.settings.objective,
                              "trials": spec.settings.trials, "confirm_seeds": list(spec.confirm_seeds)}
        tracker.client.log_dict(summary.parent_run_id, document, PLAN_ARTIFACT)
    summary.wall_seconds = time.perf_counter() - started
    _close_parent(tracker, summary)
    return summary


def _confirm_phase(study: Study, optuna_study, tracker: Tracker, experiment_id: str) -> tuple[tuple, list, list]:
    """The best distinct configurations as arms, their trials on the confirm seeds, and those not yet finished."""
    from ablate import search
    from ablate.design import trial_for
    from ablate.spec import resolve_point

    spec = study.search
    best = search.best_points(optuna_study, spec.settings.confirm_top)
    arms = tuple(
        resolve_point(study, point, name=f"top{rank} (trial {frozen.number})", index=rank - 1)
        for rank, (frozen, point) in enumerate(best, 1)
    )
    confirm = [
        trial_for(study, arm, seed, changes=f"search {spec.settings.objective} {frozen.value:.4f}")
        for arm, (frozen, _) in zip(arms, best) for seed in spec.confirm_seeds
    ]
    finished = tracker.finished_hashes(experiment_id)
    return arms, confirm, [t for t in confirm if t.hash not in finished]
