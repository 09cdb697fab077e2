"""The parent's dispatcher against a stub pool: what it does when workers die at awkward moments."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import pytest

from ablate.design import Pack, expand
from ablate.execute import RunSummary, _Dispatcher
from ablate.spec import load_study
from ablate.workers import EventChannel, Orphaned, Pool, Slot, _Worker
from tests.conftest import TINY_STUDY


class _Process:
    def __init__(self):
        self.alive, self.exitcode = True, None

    def is_alive(self) -> bool:
        return self.alive

    def join(self, timeout=None) -> None:
        pass

    def die(self) -> None:
        self.alive, self.exitcode = False, -9


class _StubPool(Pool):
    """A pool whose workers are plain objects and whose events the test writes into `received`."""

    def __init__(self, slots):
        self.received = deque()
        self.workers = {slot.index: self._start(slot) for slot in slots}

    def _start(self, slot):
        return _Worker(slot, _Process(), SimpleNamespace(put=lambda task: None),
                       SimpleNamespace(closed=False, close=lambda: None))

    def _receive(self, timeout) -> None:
        pass

    def shutdown(self, timeout=0) -> None:
        pass


class _Tracker:
    """Records what the dispatcher writes; runs have the statuses the test gives them."""

    def __init__(self, statuses=None):
        self.finished: list[tuple[str, str, str]] = []
        self.statuses = statuses or {}
        self.client = SimpleNamespace(get_run=lambda run_id: SimpleNamespace(
            info=SimpleNamespace(status=self.statuses.get(run_id, "RUNNING")),
            data=SimpleNamespace(metrics={"test_accuracy": 0.9, "train_seconds": 1.0}, tags={}),
        ))

    def start_trial(self, experiment, parent, trial, tags):
        return f"run-{trial.hash}"

    def finish(self, run_id, status, error=None, reason=None):
        self.finished.append((run_id, status, reason))


class _Reporter:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@pytest.fixture
def trials(write_study):
    return expand(load_study(write_study(TINY_STUDY)))  # linear s0, s1; mlp s0, s1


def _dispatcher(todo, tracker):
    pool = _StubPool([Slot(0, "cpu", 1)])
    return _Dispatcher(pool, todo, tracker, _Reporter(), RunSummary("exp", "parent", 4, 0)), pool


def test_a_task_handed_to_a_worker_that_just_died_goes_back_to_the_queue(trials):
    """The worker said "done" and died before the parent read it: the pack it was then given never started."""
    first, pack = trials[0], Pack(tuple(trials[2:]))
    tracker = _Tracker()
    dispatcher, pool = _dispatcher([first, pack], tracker)
    worker = pool.workers[0]
    dispatcher._feed(worker)
    pool.received.extend([("started", 0, first.hash, "run-1", first),
                          ("finished", 0, first.hash, {"test_accuracy": 0.9, "train_seconds": 1.0}, first.hash),
                          ("done", 0, first.hash)])
    worker.process.die()
    dispatcher._check_dead()
    assert [t for t, _ in dispatcher.summary.finished] == [first]
    assert dispatcher.summary.failed == [] and tracker.finished == []  # nothing recorded for the pack...
    assert pool.workers[0] is not worker and pool.workers[0].task == pack  # ...which a fresh worker now holds


def test_a_run_the_worker_ended_before_dying_unheard_keeps_its_status(trials):
    """FINISHED in the store, but the worker died before its "finished" event: not overwritten as worker-lost."""
    pack = Pack(tuple(trials[2:]))
    tracker = _Tracker({"run-a": "FINISHED"})
    dispatcher, pool = _dispatcher([pack], tracker)
    worker = pool.workers[0]
    dispatcher._feed(worker)
    pool.received.extend([("started", 0, pack.key, "run-a", pack.trials[0]),
                          ("started", 0, pack.key, "run-b", pack.trials[1])])
    worker.process.die()
    dispatcher._check_dead()
    assert [t for t, _ in dispatcher.summary.finished] == [pack.trials[0]]
    assert tracker.finished == [("run-b", "FAILED", "worker-lost")]
    assert [(t, reason) for t, reason, _ in dispatcher.summary.failed] == [(pack.trials[1], "worker-lost")]


def test_a_worker_whose_parent_is_gone_stops_as_orphaned():
    """Its event pipe breaks when the parent dies: that means orphaned (trial interrupted), not a trial error."""
    import multiprocessing

    reader, writer = multiprocessing.Pipe(duplex=False)
    reader.close()
    with pytest.raises(Orphaned):
        EventChannel(writer).put(("epoch", 0, "key", 1, 0.5, "hash"))


def test_a_later_phase_replaces_workers_that_died_idle_in_an_earlier_one(trials):
    """A search's confirm runs come after its trials: a worker that died when there was nothing left to give it
    was left stopped; the confirm phase must get a fresh worker for that slot, not run nothing."""
    dispatcher, pool = _dispatcher(trials[:2], _Tracker())
    dead = pool.workers[0]
    dead.stopping = True
    dead.process.die()
    dispatcher._replace_lost_before()
    assert pool.workers[0] is not dead and pool.idle() == [pool.workers[0]]
