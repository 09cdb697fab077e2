"""The backend protocol: where a dispatcher's tasks run. The contract every backend keeps, written down once.

A backend keeps one worker per slot. The dispatcher (ablate.run's) decides what each slot
does; the backend carries it out and reports what happens, nothing more:

- `give(slot, task)` hands a task to the slot's worker, which the dispatcher only does when
  that worker is idle. The worker reports the task's events (ablate.run's events module).
- `next_event(timeout)` returns the next event of any worker, or None after `timeout`
  seconds without one. A worker's events arrive in the order it sent them, and what a
  worker sent before it died still arrives (a half-written event does not).
- `dead()` names the slots whose worker died without being asked to stop, each with how it
  died ("the worker process died (exit code -9)"), until the dispatcher answers with
  `replace(slot)` (a fresh worker takes the slot; False where none can: a cluster that lost
  the node has no room left, and the slot is retired) or `stop(slot)` (the slot is retired).
- `retries_lost`: how many times a trial whose worker was lost while training it is trained
  again (0: it stays FAILED, worker-lost, for the next invocation). Where a worker dies of its
  trial (one machine) retrying is futile; where it dies with its node (a cluster) it is not.
- `stop(slot)` lets the slot's worker exit once idle (it gets no more tasks); it also
  retires a dead slot. `interrupt(slots)` passes Ctrl-C to those workers, whose tasks then
  end KILLED; `terminate(slot)` ends a worker at once; `shutdown()` stops every worker,
  waiting a while for each. Once `shutdown()` returns no worker writes to the store any more:
  the dispatcher then records the runs of the workers it terminated, and an interrupted
  invocation ends every trial run of its own still RUNNING (ablate.run's study).

Nothing else is assumed of a worker: it may be a process of this machine (LocalBackend), the
dispatcher's own process (InlineBackend), or an actor on another node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ablate.run._events import Event
from ablate.run._slots import Slot
from ablate.run._tasks import Task

if TYPE_CHECKING:
    from ablate.run._worker import WorkerConfig


class Backend(Protocol):
    slots: list[Slot]
    retries_lost: int

    def give(self, slot: int, task: Task) -> None: ...

    def next_event(self, timeout: float) -> Event | None: ...

    def dead(self) -> dict[int, str]: ...

    def replace(self, slot: int) -> bool: ...

    def stop(self, slot: int) -> None: ...

    def interrupt(self, slots: list[int], signum: int = 2) -> None: ...

    def terminate(self, slot: int) -> None: ...

    def shutdown(self, timeout: float = 10.0) -> None: ...


# How a backend is made: from the slots it keeps workers on and what every worker needs (ablate.run's worker).
MakeBackend = Callable[[list[Slot], "WorkerConfig"], Backend]
