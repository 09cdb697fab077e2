"""The Ray backend: one actor per slot on the nodes of a Ray cluster, each running ablate's Worker.

`ray` is imported here and in this module's two parts (_ray_cluster, _ray_actor) only, and these only
when a run asks for `backend = "ray"`.

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

This module is the driver's side: the data shelf and the backend that places, polls, replaces and stops the
actors. Connecting to the cluster and its slots are ablate.run._ray_cluster's; the actor itself, what runs on the
nodes, is ablate.run._ray_actor's.
"""

from __future__ import annotations

import math
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.run._events import Event
from ablate.run._ray_actor import SlotActor
from ablate.run._ray_cluster import connect
from ablate.run._slots import Slot
from ablate.run._tasks import Task, task_trials
from ablate.run._worker import WorkerConfig
from ablate.search import SearchTask

POLL_SECONDS = 1.0  # how long an actor's event poll waits for news before it answers empty
RETRIES_LOST = 2  # a trial lost with its node is trained again this many times at most
GONE_SECONDS = 10.0  # how long shutdown waits for a killed actor to be gone
UNAVAILABLE_PAUSE = 0.5  # between two asks of an actor Ray cannot reach for now
PLACE_SECONDS = 60.0  # how long a new actor may wait for the cluster to place it before its slot is given up
ROOM_SECONDS = 5.0  # how long a lost slot waits for the cluster to show room for a fresh actor


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
                              + ("; ".join(causes) if causes
                                 else "it has no free room for one (another job holds it?)"))
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
