"""The worker: one slot's device set up once, then the tasks it is given, each logged to MLflow by itself.

The worker never assumes where it runs — a process of this machine (the local backend), the
dispatcher's own process (inline), an actor on another node: it gets its slot, a picklable
WorkerConfig and a function to emit events through, and it stops a task by raising:
KeyboardInterrupt (Ctrl-C: the task's open runs end KILLED and it emits Killed) or Orphaned
(its invocation is gone: they end FAILED, reason interrupted). A trial that fails on its own
(an exception, divergence, out of memory) is recorded FAILED with its reason and traceback;
the worker frees the memory and is ready for the next task.

While it holds runs, a heartbeat thread writes their heartbeat (ablate.tracking's liveness),
so another invocation, on any host, can tell a worker that is gone from one that is busy.

This module owns the worker and its tasks; a trial's run is ablate.run._trial_run's, the faults that end a
task and their classification ablate.run._faults'.
"""

from __future__ import annotations

import gc
import math
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ablate import datasets
from ablate._timeline import mark
from ablate.design import Pack, Trial
from ablate.errors import StoreError
from ablate.run._events import Done, Event, Killed, Outcome, Skipped, StoreFailed
from ablate.run._faults import Die, Orphaned
from ablate.run._signals import reason_of
from ablate.run._slots import Slot
from ablate.run._tasks import Task, task_key
from ablate.run._trial_run import Elsewhere, TrialRun
from ablate.search import SearchTask
from ablate.spec import DataSettings, TrialSettings
from ablate.tracking import BEAT_SECONDS, DEVICE, PACK, PACK_SIZE, WORKER, Heartbeat, Identity, Lease

if TYPE_CHECKING:
    from ablate.engine import TrialResult
    from ablate.search import AskedTrial

Emit = Callable[[Event], None]


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs besides its slot and its tasks; picklable, so it can travel to any process."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    parent: Identity  # the invocation's process: a worker whose invocation is gone stops
    env_tags: dict[str, str]
    data_dir: str
    import_paths: tuple[str, ...]  # where custom model factories are found
    faults: dict[str, str] = field(default_factory=dict)
    models: str = "best"  # [tracking] models: which trial runs keep their trained model (ablate.tracking's models)
    claims: str | None = None  # the claims database (ablate.tracking's claims); None: derived from the store
    # The datasets and splits the study trains on: loaded as the worker starts, while it claims its first trial.
    data: tuple[tuple[str, DataSettings], ...] = ()
    graphs: str = "off"  # [execution] graphs: capture a single trial's step as a CUDA graph ("auto") or not


@contextmanager
def _second_ctrl_c_ignored() -> Iterator[None]:
    """A second Ctrl-C (or SIGTERM) must not cut the recording of the first short. The handlers come back
    afterwards: an inline worker shares the dispatcher's process. Only a main thread may touch signal handlers (an
    actor's task may run on another), so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Worker:
    """A slot's worker (see the module docstring); `die` ends it at once for the test-only kill faults."""

    def __init__(self, slot: Slot, config: WorkerConfig, emit: Emit, die: Die):
        import torch

        from ablate.tracking import Tracker

        self.slot, self.config, self.emit, self.die = slot, config, emit, die
        torch.set_num_threads(slot.threads)
        sys.path[:0] = [p for p in config.import_paths if p not in sys.path]
        self.device = torch.device(slot.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        else:
            from ablate.engine import steady_allocations

            steady_allocations()  # activations on the heap, not freshly mapped pages every step
        self.tracker = Tracker(config.tracking_uri, config.claims)
        # Who runs this worker's trials, as each trial run records it (its device, slot and process).
        self.tags = {DEVICE: slot.device, WORKER: str(slot.index), **Identity.of_this_process().tags()}
        self.open_runs: set[str] = set()  # the runs whose heartbeat this worker writes
        self.leases: dict[str, Lease] = {}  # their claims (trial runs), renewed with each beat
        self.heartbeat = Heartbeat(self._beat).start()
        self._parent_checked, self._parent_alive = -math.inf, True
        self._loading = self._prefetch(config.data)

    def run(self, task: Task) -> None:
        """Train one task, then emit Done; KeyboardInterrupt and Orphaned end it early (and propagate). A store that
        fails under it ends it with StoreFailed: nothing more can be recorded, so the dispatcher stops the run."""
        try:
            if isinstance(task, Trial):
                self._run_trial(task)
            elif isinstance(task, Pack):
                self._run_pack(task)
            else:
                self._run_search(task)
        except StoreError as exc:
            self.open_runs.clear()
            self.emit(StoreFailed(self.slot.index, task_key(task), str(exc)))
            return
        self.emit(Done(self.slot.index, task_key(task)))

    def close(self) -> None:
        self.heartbeat.stop()

    def _beat(self) -> None:
        """The open runs' heartbeat, and their claims' (a claim lost here fails its commit: see TrialRun.finished)."""
        self.tracker.beat(sorted(self.open_runs))
        self.tracker.renew(list(self.leases.values()))

    def orphaned(self) -> bool:
        """Is the invocation that started this worker gone? On its host the process table says at once; elsewhere
        its parent run's heartbeat does, read at most once per beat interval."""
        parent = self.config.parent
        if parent.here:
            return not parent.running()
        now = time.monotonic()
        if now - self._parent_checked >= BEAT_SECONDS:
            self._parent_checked = now
            try:
                self._parent_alive = self.tracker.run_alive(self.config.parent_run_id)
            except Exception:  # noqa: BLE001 — an unreachable store proves nothing either way: keep the last answer
                pass
        return not self._parent_alive

    # -- one trial, a pack, a search trial ----------------------------------------------

    def _run_trial(self, trial: Trial) -> None:
        from ablate.engine import train_trial

        try:
            run = TrialRun(self, trial, trial.hash)
        except Elsewhere as lost:
            self.emit(Skipped(self.slot.index, trial.hash, trial.hash, lost.elsewhere))
            return
        mark("trial claimed")
        try:
            result = train_trial(run.settings, self._data(run.settings), self.device, run.epoch,
                                  graphs=self.config.graphs)
        except (KeyboardInterrupt, Orphaned) as exc:
            self._interrupted(exc, [run], trial.hash)
            raise
        except StoreError:
            raise
        except Exception as exc:
            run.failed(exc, traceback.format_exc())
            self._free_memory()
            return
        run.finished(result)

    def _run_pack(self, pack: Pack) -> None:
        """K trials trained as one packed network (ablate.engine), each logged to its own run as if it ran alone and
        recorded as soon as it ends."""
        from ablate.engine import train_pack

        runs = self._claim_pack(pack)
        if not runs:
            return
        open_runs = dict(enumerate(runs))  # the trials not yet recorded

        def on_end(i: int, result: TrialResult | BaseException) -> None:
            run = open_runs.pop(i)
            if isinstance(result, BaseException):  # this trial alone diverged
                run.failed(result, f"{type(result).__name__}: {result}\n")
            else:
                run.finished(result)

        settings = [run.settings for run in runs]
        try:
            train_pack(settings, self._data(settings[0]), self.device,
                       lambda i, epoch, metrics: runs[i].epoch(epoch, metrics), on_end=on_end)
        except (KeyboardInterrupt, Orphaned) as exc:
            self._interrupted(exc, list(open_runs.values()), pack.key)
            raise
        except StoreError:
            raise
        except Exception as exc:  # the pack failed (out of memory, a bug): each of its trials still open did
            trace = traceback.format_exc()
            for run in list(open_runs.values()):
                run.failed(exc, trace)
            self._free_memory()

    def _claim_pack(self, pack: Pack) -> list[TrialRun]:
        """The pack's trials this worker claimed (the others are another invocation's: Skipped); they train together."""
        runs = []
        for trial in pack.trials:
            try:
                runs.append(TrialRun(self, trial, pack.key, **{PACK: pack.key, PACK_SIZE: str(len(pack.trials))}))
            except Elsewhere as lost:
                self.emit(Skipped(self.slot.index, pack.key, trial.hash, lost.elsewhere))
        return runs

    def _run_search(self, task: SearchTask) -> None:
        """Ask the shared Optuna storage for a trial, train it with pruning, tell the storage how it went. The Optuna
        trial is the claim: a tell that finds it ended (another invocation took its asker for gone and failed it,
        to try its point again) means this run is not the trial's any more, and it records nothing as the trial's.
        No trial is asked when the search's budget is spent (by every invocation together: search.ask)."""
        import optuna

        from ablate.engine import train_trial
        from ablate.search import ask

        asked = ask(task)
        if asked is None:
            return
        run = TrialRun(self, asked.trial, task.key, role="search", optuna_trial=str(asked.number))
        asked.attach_run(run.run_id)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            run.epoch(epoch, metrics)
            if asked.should_prune(epoch, metrics):
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            result = train_trial(run.settings, self._data(run.settings), self.device, on_epoch, test=False,
                                  graphs=self.config.graphs)
        except optuna.TrialPruned as exc:
            epoch = int(str(exc).rsplit(" ", 1)[-1])
            if not asked.pruned():
                run.lost()
                return
            # its size too: a pruned point is still a point of the search, and tables and tests read it from every run
            self.tracker.log_metrics(run.run_id, {"pruned_at_epoch": epoch, "params_count": asked.trial.params_count},
                                     step=epoch)
            run.searched_to_end("PRUNED", Outcome(note=f"pruned after epoch {epoch}"))
            return
        except (KeyboardInterrupt, Orphaned) as exc:
            self._interrupted(exc, [run], task.key, tell=asked.interrupted)  # its point is tried again on resume
            raise
        except StoreError:
            raise
        except Exception as exc:
            if asked.lost_to_another(exc):
                run.lost()
                return
            asked.failed()
            run.failed(exc, traceback.format_exc())
            self._free_memory()
            return
        self._tell_complete(asked, run, result)

    def _tell_complete(self, asked: AskedTrial, run: TrialRun, result: TrialResult) -> None:
        """Told first, then recorded: the tell is the commit (a run whose tell failed records no objective), and a
        worker that dies between the two leaves a COMPLETE trial whose run the next invocation completes."""
        values = asked.values(result.history, result.tested_epoch, result.train_seconds)  # several: then its costs
        value = values[0]
        if not asked.complete(values):
            run.lost()
            return
        final = {k: v for k, v in result.final_metrics().items() if not k.startswith("test_")}
        self.tracker.log_metrics(run.run_id, {**final, "objective": value}, step=len(result.history))
        run.searched_to_end("COMPLETE", Outcome(note=f"{asked.objective} {value:.4f} (Optuna trial {asked.number})"))

    # -- shared pieces ------------------------------------------------------------------

    def _prefetch(self, pairs: tuple[tuple[str, DataSettings], ...]) -> threading.Thread | None:
        """Load the study's data in a thread, from the start: reading the files and splitting them (numpy and torch,
        which let go of the GIL) overlaps the first claim's store queries instead of following them. A user's
        dataset factory is left to the trial (its code runs where the trial does)."""
        wanted = [(name, data) for name, data in pairs if not datasets.is_factory_key(name)]
        if not wanted:
            return None

        def load() -> None:
            for name, data in wanted:
                try:
                    datasets.load(name, data, Path(self.config.data_dir), self.device)
                except Exception:  # noqa: BLE001 — the trial loads it again and fails with the real message
                    pass

        thread = threading.Thread(target=load, name="ablate-data", daemon=True)
        thread.start()
        return thread

    def data(self, settings: TrialSettings) -> datasets.DeviceData:
        """A trial's data on this worker's device (loaded once per process: ablate.datasets caches it)."""
        if self._loading is not None:  # never two loads at once: the prefetch's is the one the cache keeps
            self._loading.join()
            self._loading = None
        return datasets.load(settings.dataset, settings.data, Path(self.config.data_dir), self.device)

    def _data(self, settings: TrialSettings) -> datasets.DeviceData:
        data = self.data(settings)
        mark("data loaded")
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        return data

    def _interrupted(self, exc: BaseException, runs: list[TrialRun], key: str,
                     tell: Callable[[], None] | None = None) -> None:
        """Ctrl-C ends the task's open runs KILLED (and tells the dispatcher); a vanished parent ends them FAILED.
        `tell` is what else must be recorded first (an Optuna trial's end)."""
        killed = isinstance(exc, KeyboardInterrupt)
        with _second_ctrl_c_ignored():
            if tell is not None:
                tell()
            for run in runs:
                run.interrupted(killed, reason_of(exc))
            if killed:
                self.emit(Killed(self.slot.index, key))

    def _free_memory(self) -> None:
        """Drop what the failed trial held, so the worker's next trial starts with the device's memory free."""
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def peak_memory_mb(self) -> float:
        """Peak device memory the trial allocated (GPU), or the worker process's peak resident memory (CPU)."""
        import resource

        import torch

        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kilobytes



