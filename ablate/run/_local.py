"""The local backend: one supervised worker process per slot on this machine.

Workers fork from a server process that has imported torch, MLflow and ablate once (a
worker starts in a fraction of a second instead of seconds); the server never touches CUDA,
so forking it is safe. Where there is no forkserver, workers spawn.

Each worker reports on a pipe of its own, never a shared multiprocessing.Queue: a Queue's
writers share one lock, taken by a background feeder thread, and a worker killed while
holding it (kill -9, the OOM killer) would silence every other worker for good. A dead
worker's pipe reads as end-of-file; a message it left half-written is discarded.

ablate supervises its processes itself rather than through joblib's executor, which treats
one dead worker as a broken pool and stops the others mid-trial.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue

from ablate._timeline import mark
from ablate.run._events import Event, Ready
from ablate.run._faults import Orphaned
from ablate.run._signals import raise_on_sigterm
from ablate.run._slots import Slot
from ablate.run._tasks import Task
from ablate.run._worker import Worker, WorkerConfig

# What the worker server imports once, so that every worker it forks has it: torch, MLflow and the engine — and
# torch._dynamo, which torch's optimizers import when the first one is made (~1 s and 900 modules per worker), and
# MLflow's database store with its schema check (alembic), which a worker's Tracker opens (~0.6 s per worker).
PRELOAD = ["ablate.engine", "ablate.run", "ablate.tracking._tracker", "mlflow.tracking", "mlflow.entities",
           "mlflow.store.tracking.sqlalchemy_store", "torch._dynamo"]


class EventChannel:
    """A worker's events to the parent, written straight into a pipe only this worker writes to."""

    def __init__(self, connection: Connection):
        self.connection = connection

    def put(self, event: Event) -> None:
        try:
            self.connection.send(event)
        except OSError as exc:  # a broken pipe: nobody reads any more, the parent is gone
            raise Orphaned() from exc

    def die(self, mid_event: bool) -> None:
        """The test-only kill faults: SIGKILL this process, after writing half an event when asked to."""
        if mid_event:
            os.write(self.connection.fileno(), (1 << 20).to_bytes(4, "big") + b"an unfinished event")
        os.kill(os.getpid(), signal.SIGKILL)


def serve(slot: Slot, config: WorkerConfig, tasks: Queue, connection: Connection) -> None:
    """A worker process's life: set up its device once, then run tasks until told to stop or orphaned. A stop
    before it holds a task (Ctrl-C or SIGTERM while it starts or waits, its parent gone) ends it quietly: it has
    nothing to record."""
    mark("worker forked")
    channel = EventChannel(connection)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the worker server ignores Ctrl-C; a worker does not
        raise_on_sigterm()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # a held one lands here, inside
        worker = Worker(slot, config, channel.put, channel.die)
    except (KeyboardInterrupt, Orphaned):
        _deaf()
        return
    try:
        mark("worker ready")
        channel.put(Ready(slot.index, os.getpid()))
        _serve_tasks(worker, tasks)
    except (KeyboardInterrupt, Orphaned):
        _deaf()  # recorded: a second signal would only stop us early
    finally:
        worker.close()
        _deaf()


def _deaf() -> None:
    """A worker on its way out ignores Ctrl-C and SIGTERM: it has nothing left to record, and a second one — Ctrl-C
    reaches it from the terminal and again from the parent, which passes signals on — would otherwise raise in
    multiprocessing's bootstrap after serve returned and print a traceback."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _serve_tasks(worker: Worker, tasks: Queue) -> None:
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if worker.orphaned():
                return
            continue
        if task is None:
            return
        worker.run(task)


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    if _server_started:
        from multiprocessing import forkserver

        forkserver.ensure_running()  # restarts it only if it died
    else:
        _start_server_deaf_to_ctrl_c()
    return context


_server_started = False


def start_worker_server() -> None:
    """Start the worker server now, while this process has no other thread: call it before MLflow loads (its
    telemetry thread) and before the heartbeat starts. Ctrl-C is ignored here while the server starts (see
    _start_server_deaf_to_ctrl_c), and a thread other than the main one could take a Ctrl-C in that moment and drop
    it; with one thread, it is held for the main one. It also lets the server import torch while the run sets up."""
    global _server_started
    if "forkserver" in multiprocessing.get_all_start_methods():
        multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
        _start_server_deaf_to_ctrl_c()
        _server_started = True


def _start_server_deaf_to_ctrl_c() -> None:
    """Start the worker server with Ctrl-C ignored. Ctrl-C reaches every process of the terminal's group; the
    server, busy importing torch, would print a traceback for it (and die, taking later workers with it). A
    process started with SIGINT ignored keeps it ignored, so its workers set their own handler (serve). SIGINT is
    also held (blocked) meanwhile, so that a Ctrl-C meant for us in that moment is delivered afterwards, not lost
    (to this thread: start it while no other thread runs, see start_worker_server);
    the server and its workers inherit the block, which serve lifts."""
    import threading
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        forkserver.ensure_running()
        return
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends (then they are delivered): a process started halfway would be
    lost to us, and print a traceback when it finds its parent gone."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclass
class _Process:
    process: BaseProcess
    tasks: Queue
    events: Connection  # the reading end of the worker's event pipe
    stopping: bool = False  # asked to stop (or retired dead): its exit is no news


class LocalBackend:
    """Worker processes on this machine, one per slot (see the module docstring and the Backend protocol)."""

    retries_lost = 0  # a worker process dies of its trial (a crash in native code, the OOM killer): no retry

    def __init__(self, slots: list[Slot], config: WorkerConfig):
        self.slots, self.config = slots, config
        self.context = _context()
        self.received: deque[Event] = deque()  # events read from the pipes, not yet handed out
        self.workers: dict[int, _Process] = {}
        try:
            with _signals_deferred():  # a worker is started whole or not at all: Ctrl-C lands between two
                for slot in slots:
                    self.workers[slot.index] = self._start(slot)
        except BaseException:  # Ctrl-C while workers start: none may be left starting without us (see _abandon)
            self._abandon()
            raise

    def _abandon(self) -> None:
        """End the workers started so far. One still starting would unpickle its task queue after we are gone and
        print a traceback; SIGTERM ends it silently before it has set any handler."""
        for worker in self.workers.values():
            worker.process.terminate()
        for worker in self.workers.values():
            worker.process.join(timeout=5)

    def _start(self, slot: Slot) -> _Process:
        tasks = self.context.Queue()
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=serve, args=(slot, self.config, tasks, writer),
                                       name=f"ablate-worker-{slot.index}", daemon=True)
        process.start()
        writer.close()  # the worker holds the only writing end, so its death reads as end-of-file here
        return _Process(process, tasks, reader)

    def give(self, slot: int, task: Task) -> None:
        self.workers[slot].tasks.put(task)

    def next_event(self, timeout: float) -> Event | None:
        if not self.received:
            self._receive(timeout)
        return self.received.popleft() if self.received else None

    def _receive(self, timeout: float) -> None:
        open_readers = [w.events for w in self.workers.values() if not w.events.closed]
        for reader in connection_wait(open_readers, timeout):
            try:
                self.received.append(reader.recv())
            except (EOFError, OSError):  # the worker is gone; dead() will say so
                reader.close()

    def dead(self) -> dict[int, str]:
        return {index: f"the worker process died (exit code {w.process.exitcode})"
                for index, w in self.workers.items() if not w.stopping and not w.process.is_alive()}

    def replace(self, slot: int) -> bool:
        old = self.workers[slot]
        old.process.join(timeout=1)
        if old.process.is_alive():  # a retired worker still on its way out: it must not outlive its slot
            old.process.terminate()
            old.process.join(timeout=2)
        old.events.close()
        self.workers[slot] = self._start(next(s for s in self.slots if s.index == slot))
        return True

    def stop(self, slot: int) -> None:
        worker = self.workers[slot]
        if not worker.stopping and worker.process.is_alive():
            worker.tasks.put(None)
        worker.stopping = True

    def interrupt(self, slots: list[int], signum: int = signal.SIGINT) -> None:
        """Ctrl-C reaches workers through the terminal; a signal sent to the parent alone (`kill`, SIGTERM) is
        passed on, as the same signal, so that the runs record why they stopped."""
        for slot in slots:
            process = self.workers[slot].process
            if process.is_alive():
                try:
                    os.kill(process.pid, signum)
                except ProcessLookupError:
                    pass

    def terminate(self, slot: int) -> None:
        self.workers[slot].process.terminate()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Every worker gone when it returns: one deaf to SIGTERM as well (it records its runs with signals
        ignored, and a store may hang) is killed, since what it left RUNNING is ended by the parent next."""
        for slot in self.workers:
            self.stop(slot)
        for worker in self.workers.values():
            worker.process.join(timeout=timeout)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
