"""The dispatcher: the parent's loop that hands tasks to a backend's slots and turns events into a summary.

It hands a task to a slot only when the slot is idle, so it always knows which trials each
slot holds: when a worker dies, the trials it had started and not ended are recorded FAILED
(`worker-lost`) — unless the store shows the worker ended them itself before dying unheard —
and what it had not started goes back to the front of the queue for a fresh worker. A slot
whose workers keep dying before finishing anything is given up on rather than restarted
forever. Ctrl-C stops handing out tasks and ends the running trials KILLED.

It asks the backend (ablate.run's backend protocol) for nothing but the protocol, and the
store (a Ledger) for nothing but a run's state and ending a run: it works the same on
processes, in-process, or on a cluster engine.

A trial another invocation claimed first (see Tracker.claim_trial) comes back Skipped and is
counted, not trained. A store that fails under a worker (StoreFailed) stops the run as
Ctrl-C does: nothing more could be recorded.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ablate.design import Pack, Trial, pack_trials
from ablate.errors import StoreError
from ablate.run import _signals
from ablate.run._backend import Backend
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
from ablate.run._slots import Slot
from ablate.run._tasks import Task, task_key, task_trials
from ablate.tracking import ERROR, INTERRUPTED, REASON, WORKER_LOST, RunState

if TYPE_CHECKING:
    from ablate.tracking import Settled

# A slot whose workers keep dying before finishing anything is not worth restarting forever.
MAX_LOST_IN_A_ROW = 3


class Reporter(Protocol):
    """What a run tells its user; the CLI draws it, tests can record it."""

    def start(self, total: int, skipped: int, slots: list[Slot]) -> None: ...
    def trial_started(self, trial: Trial, slot: Slot) -> None: ...
    def epoch(self, trial: Trial, slot: Slot, epoch: int, val_accuracy: float) -> None: ...
    def trial_finished(self, trial: Trial, slot: Slot, outcome: Outcome) -> None: ...
    def trial_failed(self, trial: Trial, slot: Slot, reason: str, error: str) -> None: ...
    def trial_skipped(self, trial: Trial, elsewhere: str) -> None: ...
    def trial_retried(self, trial: Trial, slot: Slot, why: str) -> None: ...
    def note(self, text: str) -> None: ...  # news between rounds (adaptive seeds), shown as it happens


class Ledger(Protocol):
    """What the dispatcher asks of the tracking store (ablate.tracking's Tracker keeps it)."""

    def settle(self, run_id: str, status: str, error: str | None = None, reason: str | None = None,
               force: bool = False) -> Settled: ...
    def running_runs(self, experiment_id: str, parent_id: str, trial_hash: str) -> list[str]: ...


@dataclass
class RunSummary:
    experiment_id: str
    parent_run_id: str | None
    total: int
    skipped: int
    finished: list[tuple[Trial, Outcome]] = field(default_factory=list)
    failed: list[tuple[Trial, str, str]] = field(default_factory=list)  # (trial, reason, error)
    recovered: list[dict[str, str]] = field(default_factory=list)  # runs a killed invocation left RUNNING
    running_elsewhere: int = 0  # trials a live invocation elsewhere trains (seen at start, or lost claims)
    done_elsewhere: int = 0  # trials another invocation finished while this one ran
    interrupted: bool = False
    stop_reason: str = INTERRUPTED  # why an interrupted run stopped: interrupted (Ctrl-C) or preempted (SIGTERM)
    store_error: str | None = None  # the store failed under a worker: its message
    notes: list[str] = field(default_factory=list)  # what the user should know about this run (printed at its end)
    wall_seconds: float = 0.0
    slots: list[Slot] = field(default_factory=list)


@dataclass
class _OpenTrial:
    trial: Trial
    run_id: str | None = None  # None until the worker started the trial's run


@dataclass
class _Held:
    """What the dispatcher knows of one slot: the task it holds and that task's trials not yet ended."""

    slot: Slot
    task: Task | None = None
    open: dict[str, _OpenTrial] = field(default_factory=dict)  # trial hash → its open trial
    stopped: bool = False  # retired: its worker was told to stop, or died with nothing left to do

    @property
    def key(self) -> str | None:
        return None if self.task is None else task_key(self.task)

    def hold(self, task: Task) -> None:
        self.task = task
        self.open = {t.hash: _OpenTrial(t) for t in task_trials(task)}

    def clear(self) -> None:
        self.task, self.open = None, {}


class Dispatcher:
    """Hands tasks to a backend's slots, phase after phase (a search's trials, then its confirm runs)."""

    def __init__(self, backend: Backend, ledger: Ledger, reporter: Reporter, summary: RunSummary):
        self.backend, self.ledger, self.reporter, self.summary = backend, ledger, reporter, summary
        self.held = {slot.index: _Held(slot) for slot in backend.slots}
        self.pending: deque[Task] = deque()
        self.lost_in_a_row = 0
        self.deadline: float | None = None
        self.terminated: list[_OpenTrial] = []  # open trials of workers ended at once: recorded once they are gone
        self.lost_tries: dict[str, int] = {}  # trial hash → how many times its worker was lost while training it

    def run(self, tasks: list[Task], timeout: float | None = None) -> None:
        """One phase: every task handed out and ended, unless `timeout` seconds pass (start nothing new) or Ctrl-C
        (summary.interrupted)."""
        self.pending = deque(tasks)
        self.lost_in_a_row = 0
        self.deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._revive_stopped()
            for held in self._idle():
                self._feed(held)
            while self._busy():
                _signals.raise_if_received()
                event = self.backend.next_event(timeout=0.5)
                if event is not None:
                    self._handle(event)
                self._check_dead()
        except KeyboardInterrupt as exc:
            self.summary.interrupted = True
            stopped = _signals.as_interrupted(exc)
            self.summary.stop_reason = stopped.reason
            self._stop_running(stopped.signum)
        except _StoreFailed:
            self._stop_running(signal.SIGINT)

    def close(self) -> None:
        """Shut the workers down; then the runs of those ended at once (see _stop_running) are recorded KILLED."""
        self.backend.shutdown()
        self._end_killed(self.terminated)
        self.terminated.clear()

    def _busy(self) -> list[_Held]:
        return [h for h in self.held.values() if h.task is not None]

    def _idle(self) -> list[_Held]:
        return [h for h in self.held.values() if h.task is None and not h.stopped]

    def _revive_stopped(self) -> None:
        """Slots retired in an earlier phase (their worker died when there was nothing left to give it) get a fresh
        worker when this phase has work for them."""
        for held in self.held.values():
            if self.pending and held.stopped and self.backend.replace(held.slot.index):
                held.stopped = False

    def _feed(self, held: _Held) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.pending.clear()  # a search's timeout: start nothing new
        if self.pending:
            held.hold(self.pending.popleft())
            self.backend.give(held.slot.index, held.task)
        else:
            held.clear()  # idle until the next phase, or until the backend shuts down

    def _handle(self, event: Event) -> None:
        """A pack's trials end one by one; its slot is free at Done."""
        if isinstance(event, Ready):
            return
        held = self.held[event.slot]
        if held.task is None or event.task != held.key:
            return  # news of a task this slot no longer holds
        match event:
            case Started(trial=trial, run_id=run_id):
                held.open[trial.hash] = _OpenTrial(trial, run_id)
                self.reporter.trial_started(trial, held.slot)
            case Epoch(trial_hash=trial_hash) if trial_hash in held.open:
                self.reporter.epoch(held.open[trial_hash].trial, held.slot, event.epoch, event.val_accuracy)
            case Finished(trial_hash=trial_hash, outcome=outcome) if trial_hash in held.open:
                self._finished(held.open.pop(trial_hash).trial, held, outcome)
            case Failed(trial_hash=trial_hash) if trial_hash in held.open:
                self._failed(held.open.pop(trial_hash).trial, held, event.reason, event.error)
            case Skipped(trial_hash=trial_hash, elsewhere=elsewhere) if trial_hash in held.open:
                self._skipped(held.open.pop(trial_hash).trial, elsewhere)
            case StoreFailed(message=message):
                held.clear()
                if self.summary.store_error is None:
                    self.summary.store_error = message
                    raise _StoreFailed()
            case Done():
                self._feed(held)
            case Killed():
                held.clear()

    def _finished(self, trial: Trial, held: _Held, outcome: Outcome) -> None:
        self.summary.finished.append((trial, outcome))
        self.lost_in_a_row = 0
        self.reporter.trial_finished(trial, held.slot, outcome)

    def _failed(self, trial: Trial, held: _Held, reason: str, error: str) -> None:
        self.summary.failed.append((trial, reason, error))
        self.reporter.trial_failed(trial, held.slot, reason, error)

    def _skipped(self, trial: Trial, elsewhere: str) -> None:
        if elsewhere == "done":
            self.summary.done_elsewhere += 1
        else:
            self.summary.running_elsewhere += 1
        self.reporter.trial_skipped(trial, elsewhere)

    def _drain(self, stopping: bool = False) -> None:
        """What workers said just before one died still counts."""
        handle = self._handle_while_stopping if stopping else self._handle
        while (event := self.backend.next_event(0.0)) is not None:
            handle(event)

    def _check_dead(self) -> None:
        if not self.backend.dead():
            return
        self._drain()
        for index, why in self.backend.dead().items():
            held = self.held[index]
            self._record_lost(held, why)
            if not self.pending:
                self.backend.stop(index)  # nothing left for a new worker to do
                held.stopped = True
                continue
            self.lost_in_a_row += 1
            if self.lost_in_a_row > MAX_LOST_IN_A_ROW * len(self.held):
                self._give_up(held)
            elif self.backend.replace(index):
                self._feed(held)
            else:  # no room for a fresh worker (a cluster lost the node): the others carry on, if any are left
                self.backend.stop(index)
                held.stopped = True
                if not self._busy() and not self._idle():
                    self._give_up(held, "not run: no worker left (every slot's worker was lost)")
        for idle in self._idle():  # what the lost slots left, for a slot that had run out of work
            if self.pending:
                self._feed(idle)

    def _record_lost(self, held: _Held, why: str) -> None:
        """The dead worker's trials that had started and not ended are FAILED (worker-lost) — settled: their claims
        fenced first, so a worker only cut off (a lost node's) cannot finish them too, and a trial it committed
        before dying is recorded FINISHED. What it had not started (it died before, or just after being handed the
        task) goes back to the front of the queue."""
        error = f"{why} while training this trial"
        unstarted = [o.trial for o in held.open.values() if o.run_id is None]
        for open_trial in held.open.values():
            if open_trial.run_id is None:
                continue
            settled = self.ledger.settle(open_trial.run_id, "FAILED", error=error, reason=WORKER_LOST, force=True)
            if not settled.ended_here:
                self._ended_unheard(open_trial.trial, held, settled.state)
            elif self._retried(open_trial.trial, held, why):
                unstarted.append(open_trial.trial)
            else:
                self._failed(open_trial.trial, held, WORKER_LOST, error)
        self._end_unheard_claims(unstarted, error)
        if isinstance(held.task, Trial | Pack):
            self.pending.extendleft(reversed(pack_trials(unstarted, len(unstarted))))  # they were one pack
        elif held.task is not None and not held.open:  # a search task that died before drawing its trial
            self.pending.appendleft(held.task)
        held.clear()

    def _end_unheard_claims(self, trials: list[Trial], error: str) -> None:
        """A worker lost just after it claimed a trial, before its Started reached us (a cluster's events travel by
        poll), left the trial's run RUNNING under this invocation; seen from another host that run looks alive for
        a while (its heartbeat is fresh), and the trial's retry would yield to it. It ends FAILED worker-lost."""
        if self.summary.parent_run_id is None:
            return
        for trial in trials:
            for run_id in self.ledger.running_runs(self.summary.experiment_id, self.summary.parent_run_id, trial.hash):
                self.ledger.settle(run_id, "FAILED", error=error, reason=WORKER_LOST, force=True)

    def _retried(self, trial: Trial, held: _Held, why: str) -> bool:
        """Is this trial, lost with its worker, trained again (see the backend's retries_lost)? Its FAILED run stays,
        a record of the loss; the new one is a run of its own."""
        tries = self.lost_tries.get(trial.hash, 0)
        if tries >= self.backend.retries_lost:
            return False
        self.lost_tries[trial.hash] = tries + 1
        self.reporter.trial_retried(trial, held.slot, why)
        return True

    def _ended_unheard(self, trial: Trial, held: _Held, state: RunState) -> None:
        """The worker ended this run (FINISHED, or FAILED with a reason) before dying, unheard — or committed its trial,
        which settling recorded FINISHED: that stands."""
        if state.status == "FINISHED":
            metrics = state.metrics
            outcome = (Outcome(test_accuracy=metrics["test_accuracy"], train_seconds=metrics.get("train_seconds", 0.0))
                       if "test_accuracy" in metrics else Outcome(note="finished"))  # a search trial is never tested
            self._finished(trial, held, outcome)
        else:
            self._failed(trial, held, state.tags.get(REASON, "error"), state.tags.get(ERROR, ""))

    def _give_up(self, held: _Held, why: str = "not run: workers kept dying") -> None:
        """Workers keep dying before they finish anything, or none is left: fail what is left rather than loop
        forever."""
        for task in self.pending:
            for trial in task_trials(task):
                self.summary.failed.append((trial, WORKER_LOST, why))
        self.pending.clear()
        self.backend.stop(held.slot.index)
        held.clear()
        held.stopped = True

    def _stop_running(self, signum: int) -> None:
        """Ctrl-C, SIGTERM or a failed store: hand out nothing more; running trials end as KILLED (by their workers,
        else here). A further signal (see ablate.run's signals) stops the waiting, not the recording. A worker still
        busy when the waiting stops is terminated, and its trials are recorded only once it is gone (close): until
        then it may still write, and a run it ends FINISHED meanwhile must stay FINISHED."""
        self.pending.clear()
        self.backend.interrupt([h.slot.index for h in self._busy()], signum)
        deadline = time.monotonic() + 20
        try:
            while self._busy() and time.monotonic() < deadline and not _signals.hurried():
                event = self.backend.next_event(timeout=0.2)
                if event is not None:
                    self._handle_while_stopping(event)
                for index in self.backend.dead():
                    self._drain(stopping=True)
                    self._mark_killed(self.held[index])
                    self.backend.stop(index)
                    self.held[index].stopped = True
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting
        for held in self._busy():
            self.backend.terminate(held.slot.index)
            self.terminated.extend(held.open.values())
            held.clear()

    def _handle_while_stopping(self, event: Event) -> None:
        try:
            self._handle(event)
        except _StoreFailed:
            pass  # already stopping

    def _mark_killed(self, held: _Held) -> None:
        """The runs a worker that is gone could not end itself."""
        self._end_killed(held.open.values())
        held.clear()

    def _end_killed(self, open_trials: Iterable[_OpenTrial]) -> None:
        """End KILLED those of these runs still RUNNING (their workers are gone; settled, so one whose trial was
        committed is recorded FINISHED); a store that failed cannot take them either (the next invocation recovers
        them)."""
        reason = self.summary.stop_reason
        try:
            for open_trial in open_trials:
                if open_trial.run_id:
                    self.ledger.settle(open_trial.run_id, "KILLED", error=killed_error(reason), reason=reason,
                                       force=True)
        except StoreError:
            pass


def killed_error(reason: str) -> str:
    """The `error` of a run ended KILLED for `reason` (interrupted or preempted)."""
    return "interrupted (Ctrl-C)" if reason == INTERRUPTED else "preempted (SIGTERM)"


class _StoreFailed(Exception):
    """A worker reported the store failed: stop this phase (summary.store_error says why)."""
