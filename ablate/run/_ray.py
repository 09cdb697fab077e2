"""The Ray backend: one actor per slot on the nodes of a Ray cluster, each running ablate's Worker.

`ray` is imported here only, and this module only when a run asks for `backend = "ray"`.

Slots (`ray_slots`): every GPU of every live node `workers_per_device` times over (an actor
asks for `1 / workers_per_device` of a GPU, and Ray sets CUDA_VISIBLE_DEVICES, so inside it
the GPU is `cuda:0`); on a cluster without GPUs (or `devices = "cpu"`), one single-threaded
actor per CPU, as on one machine: a result never depends on how many workers ran it. Ray,
not ablate, places the actors on nodes.

Data (`_DataShelf`): the driver reads each dataset once — the files need be on the driver's
machine only — and puts its uint8 arrays and training statistics into Ray's object store;
a task carries the reference, so each node fetches the data once, and its actors read it
from there (ablate.datasets' `provide`), never from a data folder.

Events: a threaded actor runs a task in one thread while the driver collects the events it
emitted with a long poll (`events`) in another; one poll per actor is outstanding at a time,
so an actor's events arrive in the order it sent them. What it emitted and nobody collected
before it died is lost, as a half-written event is on one machine: the dispatcher reads the
store for those runs.

Loss: a poll or task that raises RayActorError (ActorDiedError: the actor's process or its
node died; ActorUnavailableError: unreachable) makes the slot dead. The actor is killed at
once, before the dispatcher re-queues its trials: a node cut off from the cluster, not dead,
must not finish them a second time. Were it to anyway, readers count the first FINISHED run
of a trial, so a double finish is harmless. A lost node is the cluster's fault, not the
trial's, so this backend asks for a started trial to be trained again (`retries_lost`) where
the local backend fails it (there, a worker's death is most often the trial's own doing).

Ctrl-C and SIGTERM reach the driver only: `interrupt` raises Interrupted in the thread that
runs the actor's task (as the signal would in a worker process), so its runs end KILLED with
the reason. A driver killed with -9 takes its actors with it (Ray ends the actors of a dead
owner); the next invocation recovers their RUNNING runs through their heartbeat.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.run._events import Event, Killed, Ready
from ablate.run._signals import Interrupted
from ablate.run._slots import Slot
from ablate.run._tasks import Task, task_key, task_trials
from ablate.run._worker import Orphaned, Worker, WorkerConfig
from ablate.search import SearchTask
from ablate.spec import ExecutionSettings
from ablate.tracking import restore_signal_handlers, sqlite_path

POLL_SECONDS = 1.0  # how long an actor's event poll waits for news before it answers empty
RETRIES_LOST = 2  # a trial lost with its node is trained again this many times at most
GONE_SECONDS = 10.0  # how long shutdown waits for a killed actor to be gone
PROBE_SECONDS = 5.0  # how long the head's port may take to answer before the cluster counts as unreachable
UNAVAILABLE_PAUSE = 0.5  # between two asks of an actor Ray cannot reach for now
PLACE_SECONDS = 60.0  # how long a new actor may wait for the cluster to place it before its slot is given up
ROOM_SECONDS = 5.0  # how long a lost slot waits for the cluster to show room for a fresh actor
NODE_TAG = "ray_node"  # a trial run's tag: the id of the Ray node whose actor trained it


def connect(address: str | None) -> Any:
    """Ray, connected to the cluster at `address` ("host:port" or "auto"; None: RAY_ADDRESS, else a cluster running
    on this machine, else a new one on this machine only, as ray.init does); a clear error if it cannot."""
    try:
        import ray
    except ImportError as exc:
        raise AblateError('the ray backend needs Ray: pip install "ablate[ray]"') from exc
    if not ray.is_initialized():
        _probe(address)
        handlers = _handlers()
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"at {address}" if address else "(RAY_ADDRESS, or one on this machine)"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # not Ray's traceback
            raise AblateError(f"no Ray cluster {where}: {first}. Start one with `ray start --head` (and `ray start "
                              "--address=HEAD:PORT` on the other nodes), then give its address") from exc
        finally:
            # ray.init sets its own SIGTERM handler in a driver (it exits at once): ours stays, since SIGTERM ends a
            # run as Ctrl-C does, recording its runs (ablate.run's signals).
            raised = restore_signal_handlers(handlers)
        if raised is not None:
            raise raised
    return ray


def _probe(address: str | None) -> None:
    """A head that does not answer is said so in seconds: ray.init itself retries for minutes, printing warnings."""
    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_SECONDS):
            pass
    except (OSError, ValueError) as exc:
        raise AblateError(f"no Ray cluster at {address}: nothing answers there ({exc}). Start its head with `ray start "
                          "--head --port=PORT` (and `ray start --address=HEAD:PORT` on the other nodes), or give the "
                          "address `ray start` printed") from exc


def _handlers() -> dict[int, Any]:
    """Ctrl-C's and SIGTERM's Python handlers (none off the main thread, where none may be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    return {sig: handler for sig, handler in handlers.items() if handler is not None}


def ray_slots(execution: ExecutionSettings, tracking_uri: str | None = None, claims: str | None = None) -> list[Slot]:
    """The slots of the cluster (see the module docstring), connecting to it first; a SQLite `tracking_uri` or
    `claims` database is refused on a cluster of several nodes (its file is on the driver's machine only)."""
    ray = connect(execution.address)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if tracking_uri is not None and sqlite_path(tracking_uri) is not None and len(nodes) > 1:
        raise AblateError(f"tracking store {tracking_uri}: a SQLite file is on this machine only, and the workers on "
                          f"the other {len(nodes) - 1} node(s) of the Ray cluster cannot write to it. Use a tracking "
                          "server every node reaches: --tracking-uri http://HOST:5000 (README: Several machines)")
    if claims is not None and sqlite_path(claims) is not None and len(nodes) > 1:
        raise AblateError(f"claims database {sqlite_path(claims)}: a SQLite file is on this machine only, and the "
                          f"workers on the other {len(nodes) - 1} node(s) of the Ray cluster would each claim trials "
                          "on their own: pass --claims postgresql://… (a database every node reaches; the one behind "
                          "the MLflow server will do) or --storage with one (README: Exactly once)")
    gpus = int(sum(n["Resources"].get("GPU", 0) for n in nodes))
    cpus = [int(n["Resources"].get("CPU", 0)) for n in nodes]
    if isinstance(execution.devices, tuple):
        raise AblateError(f"devices {list(execution.devices)}: with the ray backend, devices is \"auto\" or \"cpu\" "
                          "(Ray places the workers on the GPUs of every node)")
    cluster = f"Ray cluster {ray.get_runtime_context().gcs_address}, {len(nodes)} node(s)"
    if execution.devices == "cpu" or gpus == 0:
        count = sum(cpus) if execution.workers_per_device is None else execution.workers_per_device * sum(
            1 for c in cpus if c)
        device, threads = "cpu", 1
    else:
        count = gpus * (execution.workers_per_device or 1)
        device, threads = "cuda:0", max(1, sum(cpus) // count)
    if execution.max_workers is not None:
        count = min(count, execution.max_workers)
    if count == 0:
        raise AblateError(f"the {cluster} has no {'GPU' if device != 'cpu' else 'CPU'} for a worker")
    return [Slot(index=k, device=device, threads=threads, cluster=cluster) for k in range(count)]


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


def _cause(exc: BaseException) -> str:
    """What killed an actor, in a line, where Ray's message says more than the class: its creation task's error."""
    text = str(exc)
    if "creation task" not in text:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.split(":")[0].endswith(("Error", "Exception"))]
    return f": {errors[-1]}" if errors else ""


class _DataShelf:
    """Each dataset a task needs, read once by the driver and put in Ray's object store (see the module docstring)."""

    def __init__(self, ray: Any, data_dir: Path):
        self.ray, self.data_dir = ray, data_dir
        self.refs: dict[str, Any] = {}
        self.search_datasets: dict[str, str] = {}

    def refs_for(self, task: Task) -> list[Any]:
        return [self._ref(name) for name in sorted(self._datasets(task))]

    def _datasets(self, task: Task) -> set[str]:
        if isinstance(task, SearchTask):
            if task.study_text not in self.search_datasets:
                from ablate.spec import parse_study

                self.search_datasets[task.study_text] = parse_study(task.study_text, task.study_path).info.dataset
            return {self.search_datasets[task.study_text]}
        return {t.settings.dataset for t in task_trials(task)}

    def _ref(self, name: str) -> Any:
        if name not in self.refs:
            from ablate import datasets

            arrays = datasets.read_arrays(name, self.data_dir)
            stats = datasets.train_stats(name, self.data_dir, arrays)
            self.refs[name] = self.ray.put((datasets.get(name), arrays, stats))
        return self.refs[name]


class _Actor:
    """The driver's side of one slot's actor."""

    def __init__(self, handle: Any):
        self.handle = handle
        self.node = "?"
        self.where_ref = handle.where.remote()
        self.run_ref: Any = None
        self.poll_ref: Any = None
        self.stopping = False
        self.lost: str | None = None


class RayBackend:
    """Actors on a Ray cluster, one per slot (see the module docstring and the Backend protocol)."""

    retries_lost = RETRIES_LOST

    def __init__(self, slots: list[Slot], config: WorkerConfig, address: str | None = None):
        self.ray = connect(address)
        self.slots, self.config = slots, config
        self.remote_actor = self.ray.remote(max_concurrency=3)(SlotActor)
        self.gpus = max(1, int(self.ray.cluster_resources().get("GPU", 0)))
        self.shelf = _DataShelf(self.ray, Path(config.data_dir))
        self.received: deque[Event] = deque()
        self.actors = {slot.index: self._start(slot) for slot in slots}
        self._keep_placed()

    def _keep_placed(self) -> None:
        """Keep the slots whose actor the cluster placed within PLACE_SECONDS; the others are given up, so that no
        task waits forever on an actor that never runs (more workers asked than the cluster holds, or another
        driver holding its room). With none placed, nothing can run: said so."""
        unplaced = self._unplaced(list(self.actors.values()), PLACE_SECONDS)
        for index, actor in list(self.actors.items()):
            if actor in unplaced:
                self._kill(actor)
                del self.actors[index]
        if not self.actors:
            causes = sorted({a.lost for a in unplaced if a.lost})
            raise AblateError(f"the Ray cluster placed none of {len(self.slots)} worker(s) in {PLACE_SECONDS:.0f} s: "
                              + ("; ".join(causes) if causes else "it has no free room for one (another job holds it?)"))
        self.slots = [s for s in self.slots if s.index in self.actors]

    def _unplaced(self, actors: list[_Actor], timeout: float) -> list[_Actor]:
        """Those of these new actors not running on a node after `timeout` seconds (or dead as they started)."""
        by_ref = {a.where_ref: a for a in actors}
        ready, _ = self.ray.wait(list(by_ref), num_returns=len(by_ref), timeout=timeout)
        for ref in ready:
            self._collect(by_ref[ref], ref, "where")
        return [a for a in actors if a.where_ref is not None or a.lost is not None]

    def _resources(self, slot: Slot) -> dict[str, float]:
        """A CPU slot asks for its threads' CPUs; a GPU slot for its share of a GPU (workers per GPU, rounded up so
        that every slot fits) and no CPU, so that the GPUs decide where the actors go."""
        if slot.device == "cpu":
            return {"num_cpus": slot.threads, "num_gpus": 0}
        return {"num_cpus": 0, "num_gpus": 1 / math.ceil(len(self.slots) / self.gpus)}

    def _start(self, slot: Slot) -> _Actor:
        options = self._resources(slot) | {"max_restarts": 0}
        return _Actor(self.remote_actor.options(**options).remote(slot, self.config))

    def _fits(self, slot: Slot) -> bool:
        """Does the cluster still have room for this slot's actor (a lost node takes its resources with it)? A dead
        actor's own share comes back to the cluster's count a moment after its death, so this waits a little."""
        asked = self._resources(slot)
        deadline = time.monotonic() + ROOM_SECONDS
        while True:
            free = self.ray.available_resources()
            if free.get("CPU", 0) >= asked["num_cpus"] and free.get("GPU", 0) >= asked["num_gpus"] - 1e-9:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)

    def give(self, slot: int, task: Task) -> None:
        actor = self.actors[slot]
        actor.run_ref = actor.handle.run.remote(task, *self.shelf.refs_for(task))

    def next_event(self, timeout: float) -> Event | None:
        if not self.received:
            self._receive(timeout)
        return self.received.popleft() if self.received else None

    def _receive(self, timeout: float) -> None:
        waiting: dict[Any, tuple[int, str]] = {}
        for index, actor in self.actors.items():
            if actor.lost is not None or (actor.stopping and actor.run_ref is None and actor.poll_ref is None):
                continue
            if actor.poll_ref is None:
                actor.poll_ref = actor.handle.events.remote(POLL_SECONDS)
            waiting[actor.poll_ref] = (index, "poll")
            if actor.run_ref is not None:
                waiting[actor.run_ref] = (index, "run")
            if actor.where_ref is not None:
                waiting[actor.where_ref] = (index, "where")
        if not waiting:
            time.sleep(timeout)
            return
        ready, _ = self.ray.wait(list(waiting), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(list(waiting), num_returns=len(waiting), timeout=0)
        for ref in ready:
            index, kind = waiting[ref]
            self._collect(self.actors[index], ref, kind)

    def _collect(self, actor: _Actor, ref: Any, kind: str) -> None:
        if actor.lost is not None:
            return
        try:
            value = self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError:
            # Unreachable for now, perhaps alive and training: not lost until Ray says it died (it does once the node
            # is declared dead), or a cut-off actor would finish the trial its retry trains again. Asked again later.
            self._forget(actor, kind)
            time.sleep(UNAVAILABLE_PAUSE)
            return
        # RayTaskError: an error escaped the worker's own recording, which ends a worker process too.
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.RayTaskError) as exc:
            self._lose(actor, exc)
            return
        if kind == "poll":
            actor.poll_ref = None
            self.received.extend(value)
        elif kind == "run":
            actor.run_ref = None
            if actor.stopping:
                self._retire(actor)
        else:
            actor.where_ref, actor.node = None, value

    @staticmethod
    def _forget(actor: _Actor, kind: str) -> None:
        if kind == "poll":
            actor.poll_ref = None
        elif kind == "where":
            actor.where_ref = actor.handle.where.remote()

    def _lose(self, actor: _Actor, exc: BaseException) -> None:
        """The actor is lost: killed at once (see the module docstring), then said so by dead(), with the cause
        when Ray gives one (an actor that could not start: ablate or torch missing on its node, say)."""
        actor.lost = f"the worker on node {actor.node} was lost ({type(exc).__name__}{_cause(exc)})"
        actor.run_ref = actor.poll_ref = actor.where_ref = None
        self._kill(actor)

    def dead(self) -> dict[int, str]:
        return {index: a.lost for index, a in self.actors.items() if a.lost is not None and not a.stopping}

    def replace(self, slot: int) -> bool:
        """A fresh actor for the slot, if the cluster has room for it; False: it has not (the slot stays empty)."""
        spec = next(s for s in self.slots if s.index == slot)
        old = self.actors[slot]
        if old.lost is None:
            self._kill(old)
        if not self._fits(spec):
            old.stopping = True
            return False
        fresh = self._start(spec)
        if self._unplaced([fresh], PLACE_SECONDS):  # the room seen was taken meanwhile, or the actor could not start
            self._kill(fresh)
            old.stopping = True
            return False
        self.actors[slot] = fresh
        return True

    def stop(self, slot: int) -> None:
        actor = self.actors[slot]
        actor.stopping = True
        if actor.lost is None and actor.run_ref is None:
            self._retire(actor)

    def _retire(self, actor: _Actor) -> None:
        """Let an idle actor close its worker and exit, after what it was already asked."""
        actor.handle.close.remote()
        actor.handle.__ray_terminate__.remote()

    def interrupt(self, slots: list[int], signum: int = signal.SIGINT) -> None:
        for slot in slots:
            actor = self.actors[slot]
            if actor.lost is None:
                actor.handle.interrupt.remote(signum)

    def terminate(self, slot: int) -> None:
        self._kill(self.actors[slot])

    def _kill(self, actor: _Actor) -> None:
        try:
            self.ray.kill(actor.handle, no_restart=True)
        except Exception:  # noqa: BLE001 — already gone
            pass

    def shutdown(self, timeout: float = 10.0) -> None:
        """Every actor gone when it returns: the busy ones are given `timeout` seconds to end their task (an
        interrupted one records its runs), then each closes its worker and is killed, and we wait until Ray says
        it is dead (no actor writes to the store after this)."""
        busy = [a.run_ref for a in self.actors.values() if a.run_ref is not None and a.lost is None]
        if busy:
            self.ray.wait(busy, num_returns=len(busy), timeout=timeout)
        closing = [a.handle.close.remote() for a in self.actors.values() if a.lost is None]
        if closing:
            self.ray.wait(closing, num_returns=len(closing), timeout=timeout)
        for actor in self.actors.values():
            self._kill(actor)
        self._wait_gone()

    def _wait_gone(self) -> None:
        deadline = time.monotonic() + GONE_SECONDS
        for actor in self.actors.values():
            while time.monotonic() < deadline:
                try:
                    self.ray.get(actor.handle.where.remote(), timeout=1)
                except (self.ray.exceptions.RayActorError, self.ray.exceptions.GetTimeoutError):
                    break
                time.sleep(0.1)
