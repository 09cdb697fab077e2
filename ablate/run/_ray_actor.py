"""The Ray backend's actor: one slot's Worker inside a Ray actor, on whichever node of the cluster Ray placed it.

Owns what runs on the nodes (ablate.run._ray is the driver's side): the worker set up in the actor, the task run
in one thread while the driver's long poll collects its events in another (`events`), Ctrl-C and SIGTERM raised
in the task's thread (`interrupt`: the signals reach the driver only), and the test-only kill faults ending the
actor's process as a lost node's would. Each run the actor's worker records carries its node's id (NODE_TAG).
`ray` is imported only when an actor asks for its node.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading

from ablate.run._events import Event, Killed, Ready
from ablate.run._faults import Orphaned
from ablate.run._signals import Interrupted
from ablate.run._slots import Slot
from ablate.run._tasks import Task, task_key
from ablate.run._worker import Worker, WorkerConfig

NODE_TAG = "ray_node"  # a trial run's tag: the id of the Ray node whose actor trained it


class _InterruptedHere(Interrupted):
    """Ctrl-C raised in an actor's task thread (an exception raised in another thread is made from its class)."""

    def __init__(self) -> None:
        super().__init__(signal.SIGINT)


class _PreemptedHere(Interrupted):
    """SIGTERM raised in an actor's task thread."""

    def __init__(self) -> None:
        super().__init__(signal.SIGTERM)


class SlotActor:
    """A slot's worker inside a Ray actor (made remote by RayBackend, with room for three calls at once: the task,
    the event poll and an interrupt)."""

    def __init__(self, slot: Slot, config: WorkerConfig):
        self._events: list[Event] = []
        self._news = threading.Condition()
        self._task_thread: int | None = None
        self._task_lock = threading.Lock()  # an interrupt is raised in the task's thread only while the task runs
        self._interrupted = False
        self.worker = Worker(slot, config, self._emit, self._die)
        self.worker.tags[NODE_TAG] = self._node_id()  # on each of its runs, beside host and pid
        self._emit(Ready(slot.index, os.getpid()))

    @staticmethod
    def _node_id() -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def where(self) -> str:
        """The node this actor runs on, as a person names it: host and Ray node id (several nodes may share a host)."""
        return f"{socket.gethostname()} ({self._node_id()[:12]})"

    def run(self, task: Task, *data: tuple) -> None:
        """Train one task on the data the driver shelved (see _DataShelf); a stop was recorded by the worker."""
        from ablate import datasets

        for dataset, arrays, stats in data:
            datasets.provide(dataset, arrays, stats)
        with self._task_lock:
            self._task_thread, self._interrupted = threading.get_ident(), False
        try:
            self.worker.run(task)
        except (KeyboardInterrupt, Orphaned):
            if self._interrupted:  # Killed is the dispatcher's cue; the worker emits it unless cut off before
                self._emit(Killed(self.worker.slot.index, task_key(task)))
        finally:
            with self._task_lock:
                thread, self._task_thread = self._task_thread, None
                # An interrupt raised just as the task ended has not fired yet: cancelled, or it would fire in this
                # thread's next call (an event poll) and lose that poll's events.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), None)

    def events(self, wait: float) -> list[Event]:
        """The events emitted since the last call, waiting up to `wait` seconds for one."""
        with self._news:
            self._news.wait_for(lambda: bool(self._events), timeout=wait)
            events, self._events = self._events, []
        return events

    def interrupt(self, signum: int) -> None:
        """Raise Interrupted in the task's thread, where the running trial then ends KILLED (once)."""
        with self._task_lock:
            if self._task_thread is not None and not self._interrupted:
                self._interrupted = True
                kind = _PreemptedHere if signum == signal.SIGTERM else _InterruptedHere
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._task_thread), ctypes.py_object(kind))

    def close(self) -> None:
        self.worker.close()

    def _emit(self, event: Event) -> None:
        with self._news:
            self._events.append(event)
            self._news.notify_all()

    def _die(self, mid_event: bool) -> None:
        """The test-only kill faults: the actor's process ends at once, as a lost node's would."""
        os._exit(1)
