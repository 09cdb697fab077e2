"""The inline backend: every slot's worker runs in the dispatcher's own process, one task at a time.

A task handed to a slot runs when the dispatcher next waits for events (submitit's
DebugExecutor runs a job the same way: in-process, when its result is asked for), tasks in
the order they were handed out, so a whole study runs in one process under a debugger, and
tests drive the dispatcher through real events without processes. A worker "dies" when its task raises WorkerDied — what the kill
faults do here instead of SIGKILL, and what a test's scripted task raises to stage a death
at an awkward moment; the events it emitted before dying are delivered, its runs are left
as a killed process leaves them, and the slot is reported dead until replaced or retired.
Ctrl-C inside a task ends it as a real worker would (its runs KILLED, a Killed event) and
then reaches the dispatcher, whose `interrupt` then drops the tasks handed out but not yet
started, as a worker process would on Ctrl-C before starting one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ablate.run._events import Event, Killed
from ablate.run._slots import Slot
from ablate.run._tasks import Task, task_key
from ablate.run._worker import Emit, Orphaned, Worker, WorkerConfig

Execute = Callable[[Slot, Task, Emit], None]  # a scripted worker: runs a task, emitting its events


class WorkerDied(BaseException):
    """An inline worker's death. A BaseException, so a worker's own error handling cannot catch it: like a
    kill -9, it leaves the task's runs as they were."""


def _die(mid_event: bool) -> None:
    raise WorkerDied("killed (injected fault)")


class _Slot:
    def __init__(self, slot: Slot, make_worker: Callable[[], Worker | None]):
        self.slot, self.make_worker = slot, make_worker
        self.worker = make_worker()
        self.task: Task | None = None  # handed over, not yet run
        self.died: str | None = None  # how its worker died, until replaced or retired
        self.stopped = False


class InlineBackend:
    """Workers in this process (see the module docstring and the Backend protocol).

    With `config`, each slot has a real Worker (it trains and logs to MLflow); with `execute`, a
    scripted one: `execute(slot, task, emit)` runs a task by emitting its events, and may raise
    WorkerDied. The Done event that ends a task is the worker's (or the script's) to emit.
    """

    def __init__(self, slots: list[Slot], config: WorkerConfig | None = None, execute: Execute | None = None):
        if (config is None) == (execute is None):
            raise ValueError("InlineBackend needs a WorkerConfig (real workers) or an execute function (scripted)")
        self.slots, self.config, self.execute = slots, config, execute
        self.events: deque[Event] = deque()
        self.queued: deque[int] = deque()  # slots whose task is handed out and not yet run, oldest first
        self.workers = {slot.index: _Slot(slot, lambda s=slot: self._worker(s)) for slot in slots}

    def _worker(self, slot: Slot) -> Worker | None:
        return None if self.config is None else Worker(slot, self.config, self.events.append, _die)

    def give(self, slot: int, task: Task) -> None:
        self.workers[slot].task = task
        self.queued.append(slot)

    def next_event(self, timeout: float) -> Event | None:
        if not self.events:
            self._run_one()
        return self.events.popleft() if self.events else None

    def _run_one(self) -> None:
        """Run the task handed out longest ago, delivering its events."""
        while self.queued:
            held = self.workers[self.queued.popleft()]
            if held.task is not None and held.died is None:
                break
        else:
            return
        task, held.task = held.task, None
        try:
            if self.execute is not None:
                self.execute(held.slot, task, self.events.append)
            else:
                held.worker.run(task)
        except WorkerDied as death:
            held.died = f"the inline worker died ({death})"
        except Orphaned:  # cannot happen here (the parent is this process), but a worker must not outlive it
            held.died = "the inline worker was orphaned"

    def dead(self) -> dict[int, str]:
        return {index: w.died for index, w in self.workers.items() if w.died is not None and not w.stopped}

    def replace(self, slot: int) -> None:
        old = self.workers[slot]
        self._close(old)
        self.workers[slot] = _Slot(old.slot, old.make_worker)

    def stop(self, slot: int) -> None:
        self.workers[slot].stopped = True
        self.workers[slot].task = None

    def interrupt(self, slots: list[int]) -> None:
        """Nothing runs between two waits of the dispatcher: Ctrl-C reaches the tasks not yet started, which end
        before they begin."""
        for slot in slots:
            held = self.workers[slot]
            if held.task is not None:
                self.events.append(Killed(slot, task_key(held.task)))
                held.task = None

    def terminate(self, slot: int) -> None:
        self.workers[slot].task = None

    def shutdown(self, timeout: float = 10.0) -> None:
        for held in self.workers.values():
            held.stopped, held.task = True, None
            self._close(held)

    @staticmethod
    def _close(held: _Slot) -> None:
        if held.worker is not None:
            held.worker.close()
