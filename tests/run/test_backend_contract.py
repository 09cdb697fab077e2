"""The Backend contract (ablate/run/_backend.py's docstring), one suite over every backend: InlineBackend, LocalBackend
and, where Ray is installed, RayBackend on a local single-node Ray started by this module (as optuna runs one suite
over every storage, hydra one LauncherTestSuite over every launcher). Each test states clauses of the contract and
drives the backend as the dispatcher does, with real workers training the tiny study's trials (a second or so each)
and the workers' test-only faults (kill, kill mid-event, slow) staging deaths and long tasks. A backend that cannot
keep a clause is skipped on it with the reason its own docstring gives; a clause it breaks is a strict xfail."""

from __future__ import annotations

import time

import pytest

from ablate.run import (
    Done,
    Epoch,
    Event,
    Finished,
    InlineBackend,
    Killed,
    LocalBackend,
    Ready,
    Slot,
    Started,
    WorkerConfig,
    task_key,
)
from ablate.tracking import Identity
from tests.conftest import DATA_DIR

SLOW_SECONDS = "20"  # how long a "slow" trial sleeps in its first epoch: far longer than any wait below
WAIT = 120.0  # the longest any test waits for an event (a worker process or actor imports torch first)


def _ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = [
    "inline",
    "local",
    # ~1 min on a 2-core host (each actor imports torch): with the Ray cluster tests, out of the default run
    pytest.param("ray", marks=[pytest.mark.slow, pytest.mark.long,
                               pytest.mark.skipif(not _ray_installed(), reason="Ray not installed")]),
]


@pytest.fixture(scope="module")
def local_ray():
    """A single-node Ray on this machine for the module (an explicit local address: never a cluster already
    running here), shut down after it."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(params=BACKENDS)
def make_backend(request, tracked):
    """make_backend(slots, faults) → the backend under test, with one real worker per CPU slot training into the tiny
    study's store under a parent run of this process; shut down after the test. Also gives the tiny study's
    trials: linear:0, linear:1, mlp:0, mlp:1 (stage:seed, the keys faults are given by)."""
    tracker, experiment, study, trials = tracked
    made = []

    def make(slots: int = 1, faults: dict[str, str] | None = None):
        identity = Identity.of_this_process()
        parent = tracker.start_parent(experiment, "tiny", study, len(trials), identity.tags())
        config = WorkerConfig(tracking_uri=tracker.uri, experiment_id=experiment, parent_run_id=parent,
                              parent=identity, env_tags={}, data_dir=str(DATA_DIR), import_paths=(),
                              faults={**(faults or {}), "slow-seconds": SLOW_SECONDS}, models="none")
        cpu = [Slot(i, "cpu", 1) for i in range(slots)]
        if request.param == "inline":
            backend = InlineBackend(cpu, config)
        elif request.param == "local":
            backend = LocalBackend(cpu, config)
        else:
            request.getfixturevalue("local_ray")
            from ablate.run import RayBackend

            backend = RayBackend(cpu, config)  # on the module's Ray, which is initialised
        made.append(backend)
        return backend

    make.kind = request.param
    make.trials = {f"{t.stage}:{t.seed}": t for t in trials}
    yield make
    for backend in made:  # again where a test shut it down: a second shutdown finds nothing to stop
        backend.shutdown(timeout=5)


def _events(backend, until, limit: float = WAIT) -> list[Event]:
    """The events (a worker's Ready aside) until `until(events)` holds, or `limit` seconds pass."""
    got: list[Event] = []
    deadline = time.monotonic() + limit
    while not until(got) and time.monotonic() < deadline:
        event = backend.next_event(0.5)
        if event is not None and not isinstance(event, Ready):
            got.append(event)
    return got


def _done(key: str):
    return lambda events: any(isinstance(e, Done) and e.task == key for e in events)


def test_a_task_given_to_an_idle_slot_reports_its_events_in_order_then_nothing_more(make_backend):
    """give: the slot's worker reports the task's events — Started, each Epoch in order, Finished, and Done last — in
    the order it sent them; next_event then returns None after its timeout; retries_lost is a count; stop retires
    an idle worker, which is not dead."""
    backend = make_backend()
    trial = make_backend.trials["linear:0"]
    key = task_key(trial)
    backend.give(0, trial)
    events = _events(backend, _done(key))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Started"] + ["Epoch"] * trial.settings.train.epochs + ["Finished", "Done"], kinds
    assert all(e.slot == 0 and e.task == key for e in events)
    assert [e.epoch for e in events if isinstance(e, Epoch)] == list(range(1, trial.settings.train.epochs + 1))
    assert isinstance(events[0], Started) and events[0].trial.hash == trial.hash
    assert isinstance(events[-2], Finished) and events[-2].trial_hash == trial.hash

    began = time.monotonic()
    assert backend.next_event(0.3) is None
    assert 0.25 <= time.monotonic() - began < 10
    assert isinstance(backend.retries_lost, int) and backend.retries_lost >= 0

    backend.stop(0)
    assert _events(backend, lambda events: False, limit=1) == [] and backend.dead() == {}


def test_a_dead_worker_is_named_until_replaced_or_stopped_and_what_it_sent_arrives(make_backend):
    """A worker killed at the end of its trial's first epoch (slot 0), or halfway through writing an event (slot 1):
    what each sent before it died arrives, whole (a half-written event does not); dead() names both slots with how
    they died; replace gives slot 0 a fresh worker that takes a task; stop retires slot 1; then nothing is dead."""
    backend = make_backend(2, {"linear:0": "kill", "linear:1": "kill-mid-event"})
    first, second = make_backend.trials["linear:0"], make_backend.trials["linear:1"]
    backend.give(0, first)
    backend.give(1, second)
    events = _events(backend, lambda events: len(backend.dead()) == 2)
    dead = backend.dead()
    assert set(dead) == {0, 1} and all(isinstance(how, str) and how for how in dead.values()), dead
    assert all(isinstance(e, (Started, Epoch)) for e in events), events  # whole events, and no Finished nor Done
    assert {e.slot for e in events if isinstance(e, Started)} == {0, 1}  # sent before the death: delivered

    assert backend.replace(0) is True
    backend.stop(1)
    assert backend.dead() == {}
    third = make_backend.trials["mlp:0"]
    backend.give(0, third)
    events = _events(backend, _done(task_key(third)))
    assert [type(e).__name__ for e in events][-2:] == ["Finished", "Done"] and events[-1].slot == 0
    assert backend.dead() == {}


def test_interrupt_ends_a_running_task_killed(make_backend):
    """interrupt passes Ctrl-C to a worker whose task is running: the task ends KILLED (a Killed event), long before
    it would have finished."""
    if make_backend.kind == "inline":
        pytest.skip("InlineBackend runs a task inside next_event, in the dispatcher's own thread: Ctrl-C reaches it "
                    "there, never through interrupt(), which drops the tasks handed out but not yet started")
    backend = make_backend(1, {"linear:0": "slow"})
    trial = make_backend.trials["linear:0"]
    key = task_key(trial)
    backend.give(0, trial)
    _events(backend, lambda events: any(isinstance(e, Epoch) for e in events))  # the slow first epoch is ending
    began = time.monotonic()
    backend.interrupt([0])
    events = _events(backend, lambda events: any(isinstance(e, Killed) for e in events), limit=float(SLOW_SECONDS))
    assert any(isinstance(e, Killed) and e.task == key and e.slot == 0 for e in events), events
    assert not any(isinstance(e, Finished) for e in events) and time.monotonic() - began < float(SLOW_SECONDS) - 5


def test_interrupt_ends_a_task_handed_out_but_not_started_killed(make_backend):
    """The inline backend's side of interrupt: a task handed out and not yet started ends KILLED without running."""
    if make_backend.kind != "inline":
        pytest.skip("a worker process or actor starts a task as soon as it is handed out: nothing to drop")
    backend = make_backend()
    trial = make_backend.trials["linear:0"]
    backend.give(0, trial)
    backend.interrupt([0])
    events = _events(backend, lambda events: bool(events), limit=2)
    assert [type(e) for e in events] == [Killed] and events[0].task == task_key(trial)
    assert backend.next_event(0.1) is None


def test_terminate_ends_a_task_at_once_and_shutdown_leaves_nothing_to_hear(make_backend):
    """terminate ends a worker's task at once (it never finishes); shutdown returns within its wait, after which no
    worker has anything more to say."""
    backend = make_backend(1, {"linear:0": "slow"})
    trial = make_backend.trials["linear:0"]
    backend.give(0, trial)
    if make_backend.kind != "inline":  # inline: a task runs only when the dispatcher waits for events
        _events(backend, lambda events: any(isinstance(e, Started) for e in events))
    backend.terminate(0)
    events = _events(backend, lambda events: False, limit=2)
    assert not any(isinstance(e, (Finished, Done)) for e in events), events
    began = time.monotonic()
    backend.shutdown(timeout=2)
    assert time.monotonic() - began < 30
    while backend.next_event(0) is not None:  # what was sent before it returned
        pass
    assert backend.next_event(0.5) is None
