"""The inline backend: every slot's worker runs in the dispatcher's own process, one task at a time.

A task handed to a slot runs when the dispatcher next waits for events (submitit's
DebugExecutor runs a job the same way: in-process, when its result is asked for), tasks in
the order they were handed out, so a whole study runs in one process under a debugger, and
tests drive the dispatcher through real events without processes. A worker "dies" when
anything escapes its task, as a worker process dies of it: WorkerDied — what the kill faults
raise here instead of SIGKILL, and what a test's scripted task raises to stage a death at an
awkward moment — or any error the worker's own handling did not catch. The events it
emitted before dying are delivered, its runs are left as a killed process leaves them, and
the slot is reported dead until replaced or retired.
Ctrl-C inside a task ends it as a real worker would (its runs KILLED, a Killed event) and
then reaches the dispatcher, whose `interrupt` then drops the tasks handed out but not yet
started, as a worker process would on Ctrl-C before starting one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from ablate.run._events import Event, Killed
from ablate.run._slots import Slot
from ablate.run._tasks import Task, task_key
from ablate.run._worker import Emit, Worker, WorkerConfig

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

    retries_lost = 0  # as the local backend; a test sets it to stage a cluster's retries

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
        """A buffered event; else, unless asked not to wait (timeout 0: what was already said), the events of the next
        task handed out; else None after `timeout` seconds."""
        if not self.events and timeout > 0 and not self._run_one():
            time.sleep(timeout)  # nothing to run: the dispatcher waits on workers that have nothing to say
        return self.events.popleft() if self.events else None

    def _run_one(self) -> bool:
        """Run the task handed out longest ago, delivering its events; False when there is none."""
        while self.queued:
            held = self.workers[self.queued.popleft()]
            if held.task is not None and held.died is None:
                break
        else:
            return False
        task, held.task = held.task, None
        try:
            if self.execute is not None:
                self.execute(held.slot, task, self.events.append)
            else:
                held.worker.run(task)
        except KeyboardInterrupt:  # the worker ended its runs KILLED where it could; a process would exit now
            held.died = "the inline worker stopped at Ctrl-C"
            raise
        except WorkerDied as death:
            held.died = f"the inline worker died ({death})"
        except BaseException as exc:  # noqa: BLE001 — Orphaned, or an error the worker did not handle: a process dies
            held.died = f"the inline worker died of {type(exc).__name__}: {exc}"
        return True

    def dead(self) -> dict[int, str]:
        return {index: w.died for index, w in self.workers.items() if w.died is not None and not w.stopped}

    def replace(self, slot: int) -> bool:
        old = self.workers[slot]
        self._close(old)
        self.workers[slot] = _Slot(old.slot, old.make_worker)
        return True

    def stop(self, slot: int) -> None:
        self.workers[slot].stopped = True  # it runs what it was handed, then nothing more

    def interrupt(self, slots: list[int], signum: int = 2) -> None:
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
