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
"""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ablate import datasets
from ablate.design import Pack, Trial
from ablate.errors import StoreError
from ablate.run._events import Done, Epoch, Event, Failed, Finished, Killed, Outcome, Skipped, Started, StoreFailed
from ablate.run._signals import reason_of
from ablate.run._slots import Slot
from ablate.run._tasks import Task, task_key
from ablate.search import SearchTask
from ablate.spec import TrialSettings
from ablate.tracking import (
    BEAT_SECONDS, DEVICE, DIVERGED, FAILED_ERROR, INTERRUPTED, OOM, OUTPUTS_ARTIFACT, PACK, PACK_SIZE, WORKER,
    Heartbeat, Identity, Lease,
)

if TYPE_CHECKING:
    from ablate.engine import TrialResult
    from ablate.search import AskedTrial

# Test-only fault injection, as JSON: {"<stage>:<seed>": "raise" | "nan" | "oom" | "kill" | "kill-mid-event" | "slow"}.
FAULTS_ENV = "ABLATE_TEST_FAULTS"

Emit = Callable[[Event], None]
Die = Callable[[bool], None]  # the "kill" faults: end this worker at once (True: halfway through writing an event)


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


SLOW_SECONDS = "slow-seconds"  # a key of the faults: how long "slow" sleeps (ABLATE_TEST_SLOW_SECONDS, default 30)


def faults_from_env() -> dict[str, str]:
    """The faults to inject, read in the driver: they travel in the WorkerConfig, since a worker on a cluster's
    node does not share the driver's environment."""
    raw = os.environ.get(FAULTS_ENV)
    faults = json.loads(raw) if raw else {}
    if faults and "ABLATE_TEST_SLOW_SECONDS" in os.environ:
        faults[SLOW_SECONDS] = os.environ["ABLATE_TEST_SLOW_SECONDS"]
    return faults


class Orphaned(Exception):
    """The invocation that started this worker is gone (killed): stop, record the trial as interrupted, exit."""


class _Elsewhere(Exception):
    """The trial's claim failed: another invocation finished it or is training it."""

    def __init__(self, elsewhere: str):
        super().__init__(elsewhere)
        self.elsewhere = elsewhere


def classify(exc: BaseException) -> str:
    """The `reason` of a failed trial: diverged, oom or error."""
    import torch

    from ablate.engine import Diverged

    if isinstance(exc, Diverged):
        return DIVERGED
    if isinstance(exc, torch.cuda.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc)):
        return OOM
    return FAILED_ERROR


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
        """The open runs' heartbeat, and their claims' (a claim lost here fails its commit: see _TrialRun.finished)."""
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
            run = _TrialRun(self, trial, trial.hash)
        except _Elsewhere as lost:
            self.emit(Skipped(self.slot.index, trial.hash, trial.hash, lost.elsewhere))
            return
        try:
            result = train_trial(run.settings, self._data(run.settings), self.device, run.epoch)
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

    def _claim_pack(self, pack: Pack) -> list[_TrialRun]:
        """The pack's trials this worker claimed (the others are another invocation's: Skipped); they train together."""
        runs = []
        for trial in pack.trials:
            try:
                runs.append(_TrialRun(self, trial, pack.key, **{PACK: pack.key, PACK_SIZE: str(len(pack.trials))}))
            except _Elsewhere as lost:
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
        run = _TrialRun(self, asked.trial, task.key, role="search", optuna_trial=str(asked.number))
        asked.attach_run(run.run_id)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            run.epoch(epoch, metrics)
            if asked.should_prune(epoch, metrics):
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            result = train_trial(run.settings, self._data(run.settings), self.device, on_epoch, test=False)
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

    def _tell_complete(self, asked: AskedTrial, run: _TrialRun, result: TrialResult) -> None:
        """Told first, then recorded: the tell is the commit (a run whose tell failed records no objective), and a
        worker that dies between the two leaves a COMPLETE trial whose run the next invocation completes."""
        value = result.history[result.tested_epoch - 1][asked.objective]
        if not asked.complete(value):
            run.lost()
            return
        final = {k: v for k, v in result.final_metrics().items() if not k.startswith("test_")}
        self.tracker.log_metrics(run.run_id, {**final, "objective": value}, step=len(result.history))
        run.searched_to_end("COMPLETE", Outcome(note=f"{asked.objective} {value:.4f} (Optuna trial {asked.number})"))

    # -- shared pieces ------------------------------------------------------------------

    def _data(self, settings: TrialSettings) -> datasets.DeviceData:
        data = datasets.load(settings.dataset, settings.data, Path(self.config.data_dir), self.device)
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        return data

    def _interrupted(self, exc: BaseException, runs: list[_TrialRun], key: str,
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

    def inject(self, fault: str | None, epoch: int) -> None:
        """Test-only faults, fired at the end of the first epoch (after the trial's run exists)."""
        if fault is None or epoch != 1:
            return
        import torch

        if fault in ("kill", "kill-mid-event"):  # a kill -9, possibly halfway through writing an event
            self.die(fault == "kill-mid-event")
        if fault == "raise":
            raise RuntimeError("injected fault")
        if fault == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        if fault == "slow":  # in short sleeps, as a training loop's steps: an interrupt raised in this thread by
            deadline = time.monotonic() + float(self.config.faults.get(SLOW_SECONDS, "30"))  # a Ray actor lands
            while time.monotonic() < deadline:  # between two
                time.sleep(0.05)


class _TrialRun:
    """One trial's MLflow run as its worker keeps it: started with the trial's tags, fed its epochs, ended once."""

    def __init__(self, worker: Worker, trial: Trial, key: str, role: str = "trial", **tags: str):
        self.worker, self.trial, self.key = worker, trial, key
        self.tracker = worker.tracker
        self.searched = role == "search"  # an Optuna trial's run: its end also says how Optuna saw it
        self.fault = worker.config.faults.get(f"{trial.stage}:{trial.seed}")
        self.settings = trial.settings
        if self.fault == "nan":  # an infinite learning rate: the loss is NaN within a few steps
            self.settings = replace(self.settings, train=replace(self.settings.train, lr=math.inf))
        slot, config = worker.slot, worker.config
        run_tags = {**config.env_tags, **worker.tags, **tags}
        self.lease: Lease | None = None  # a search trial's claim is its Optuna trial
        if self.searched:  # Optuna gave this point to this worker alone
            self.run_id = self.tracker.start_trial(config.experiment_id, config.parent_run_id, trial, run_tags,
                                                   role=role)
        else:
            claim = self.tracker.claim_trial(config.experiment_id, config.parent_run_id, trial, run_tags,
                                             config.parent)
            if claim.run_id is None:
                raise _Elsewhere(claim.elsewhere)
            self.run_id, self.lease = claim.run_id, claim.lease
            worker.leases[self.run_id] = claim.lease
        worker.open_runs.add(self.run_id)
        worker.emit(Started(slot.index, key, trial, self.run_id))

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.tracker.log_metrics(self.run_id, metrics, step=epoch)
        self.worker.emit(Epoch(self.worker.slot.index, self.key, self.trial.hash, epoch, metrics["val_accuracy"]))
        if self.worker.orphaned():
            raise Orphaned()
        self.worker.inject(self.fault, epoch)

    def finished(self, result: TrialResult) -> None:
        """A trained and tested trial: its test outputs and models, then the commit of its claim, which records its
        final metrics and FINISHED — unless the claim was taken over meanwhile (this worker was taken for gone):
        then the trial is the new holder's, and this run ends FAILED without them."""
        metrics = {**result.final_metrics(), "peak_memory_mb": self.worker.peak_memory_mb()}
        self._log_outputs(result)
        self._keep_models(result)
        self._forget()
        if not self.tracker.commit_trial(self.lease, self.run_id, metrics, step=len(result.history)):
            self.lost()
            return
        self._emit(Outcome(test_accuracy=result.test_accuracy, train_seconds=result.train_seconds))

    def lost(self) -> None:
        """The claim was taken over: say so on this run (if no one ended it yet) and give the trial up."""
        self._forget()
        if self.tracker.run_state(self.run_id).status == "RUNNING":
            self.tracker.finish(self.run_id, "FAILED", reason=INTERRUPTED,
                                error="its claim was taken over (this worker was taken for gone); the trial trains "
                                      "under the new claim")
        self.worker.emit(Skipped(self.worker.slot.index, self.key, self.trial.hash, "running"))

    def searched_to_end(self, optuna_state: str, outcome: Outcome) -> None:
        """A search trial Optuna saw COMPLETE or PRUNED: FINISHED (its metrics are the caller's)."""
        self._end("FINISHED", optuna_state)
        self._emit(outcome)

    def failed(self, exc: BaseException, trace: str) -> None:
        reason = classify(exc)
        self.tracker.log_text(self.run_id, trace, "traceback.txt")
        message = f"{type(exc).__name__}: {exc}"
        self._end("FAILED", error=message, reason=reason)
        self.worker.emit(Failed(self.worker.slot.index, self.key, self.trial.hash, reason, message))

    def interrupted(self, killed: bool, reason: str = INTERRUPTED) -> None:
        status = "KILLED" if killed else "FAILED"
        if self.searched:  # as search runs have always recorded it
            error = "interrupted"
        elif not killed:
            error = "the ablate run that started this trial is gone"
        else:
            error = "interrupted (Ctrl-C)" if reason == INTERRUPTED else "preempted (SIGTERM)"
        self._end(status, error=error, reason=reason)

    def _end(self, status: str, optuna_state: str = "FAIL", **why: str) -> None:
        """End the run — unless someone else already did: a dispatcher that lost touch with this worker (a node cut
        off from its cluster, not dead) records the run FAILED worker-lost and has the trial trained again. A trial
        run's claim is given up once its run has ended (not FINISHED: that is commit_trial's)."""
        self._forget()
        if self.tracker.run_state(self.run_id).status == "RUNNING":
            if self.searched:
                self.tracker.set_tag(self.run_id, "optuna_state", optuna_state)
            self.tracker.finish(self.run_id, status, **why)
        if self.lease is not None:
            self.tracker.release(self.lease)

    def _forget(self) -> None:
        """No more heartbeats for this run: it is ending."""
        self.worker.open_runs.discard(self.run_id)
        self.worker.leases.pop(self.run_id, None)

    def _emit(self, outcome: Outcome) -> None:
        self.worker.emit(Finished(self.worker.slot.index, self.key, self.trial.hash, outcome))

    def _keep_models(self, result: TrialResult) -> None:
        """The trained network as the run's MLflow model (and the last epoch's, where early stopping restored an
        earlier one), before the run is FINISHED: a run that is FINISHED and its arm's best always holds its model.
        A model that cannot be saved is said in the run's `model_error` tag; the trial itself stays done."""
        from ablate.engine import deployable
        from ablate.tracking import (
            LAST_MODEL_ARTIFACT, MODEL, MODEL_ARTIFACT, MODEL_ERROR, MODEL_SAVED, beaten, save_model,
        )

        config = self.worker.config
        if config.models == "none" or self.searched or result.model is None:
            return
        if config.models == "best" and beaten(self.tracker, config.experiment_id, self.trial.stage,
                                              result.test_accuracy):
            return
        data = self.worker._data(self.settings)
        example = data.test.images[:2].cpu().numpy()
        about = self._about(result, data)
        kept = [(result.model, about, MODEL_ARTIFACT)]
        if result.last_model is not None:
            kept.append((result.last_model, {**about, "weights": f"last epoch ({len(result.history)}), not tested"},
                         LAST_MODEL_ARTIFACT))
        try:
            for network, described, artifact in kept:
                save_model(self.tracker, self.run_id, deployable(network, data, result.channels_last), example,
                           described, artifact)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 — e.g. a custom network whose state dict or probe cannot be saved
            self.tracker.set_tag(self.run_id, MODEL_ERROR, f"{type(exc).__name__}: {exc}"[:500])
            return
        self.tracker.set_tag(self.run_id, MODEL, MODEL_SAVED)

    def _about(self, result: TrialResult, data: datasets.DeviceData) -> dict:
        """What a saved model is, for whoever loads it (its ablate.json); with ablate, `ablate.export.rebuild`."""
        trial, dataset = self.trial, datasets.get(self.settings.dataset)

        def plain(value):  # a one-channel dataset's number, or a per-channel (C, 1, 1) tensor
            return value.flatten().tolist() if hasattr(value, "flatten") else value

        return {
            "study": trial.study, "arm": trial.stage, "seed": trial.seed, "trial_hash": trial.hash,
            "run_id": self.run_id, "architecture": trial.architecture,
            "input": f"images as the dataset stores them, shape (N, {', '.join(map(str, dataset.shape))}), "
                     f"{'uint8 0-255' if dataset.pixel_bytes == 1 else 'float32'}; normalisation is inside the model",
            "output": f"class scores (N, {len(dataset.class_names)}), in the order of class_names",
            "class_names": list(dataset.class_names), "test_accuracy": result.test_accuracy,
            "weights": f"epoch {result.tested_epoch} of {len(result.history)}, tested",
            "normalise": {"mean": plain(data.mean), "std": plain(data.std)}, "channels_last": result.channels_last,
            "settings": trial.settings.to_dict(),
        }

    def _log_outputs(self, result: TrialResult) -> None:
        """Test predictions (and a linear model's weights) as a small artifact, for the report's figures."""
        import numpy as np

        if result.predictions is None:
            return
        arrays = {"predictions": result.predictions, "confidences": result.confidences}
        if result.weights is not None:
            arrays["weights"] = result.weights
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / OUTPUTS_ARTIFACT
            np.savez_compressed(path, **arrays)
            self.tracker.log_artifact(self.run_id, str(path))
