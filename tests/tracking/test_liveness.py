"""Liveness: a process's pid on its own host, its heartbeat from any other; stale runs recovered across hosts."""

from __future__ import annotations

import os
import time

import pytest

from ablate.run import Slot, Worker, WorkerConfig
from ablate.tracking import (
    HEARTBEAT,
    INTERRUPTED,
    STALE_AFTER,
    Heartbeat,
    Identity,
    alive,
    heartbeat_tags,
)
from tests.conftest import DATA_DIR

ELSEWHERE = Identity("another-host.example", 4242, "99")  # a process this machine cannot look up


def test_on_its_own_host_the_process_table_decides():
    me = Identity.of_this_process()
    assert alive(me.tags())
    assert not alive(Identity(me.host, 2**22 + 7, "1").tags())  # no such pid
    assert not alive(Identity(me.host, os.getpid(), "12345").tags())  # this pid, another start: a recycled pid
    stale_beat = heartbeat_tags(now=time.time() - 3600)
    assert alive({**me.tags(), **stale_beat})  # here the pid is the proof, not a heartbeat


def test_on_another_host_the_heartbeat_decides():
    now = 1_000_000.0
    tags = ELSEWHERE.tags()
    assert alive({**tags, **heartbeat_tags(every=15, now=now - 20)}, now=now)
    assert not alive({**tags, **heartbeat_tags(every=15, now=now - 15 * STALE_AFTER - 1)}, now=now)
    assert alive({**tags, **heartbeat_tags(every=1, now=now - 2)}, now=now)  # judged by the writer's own interval
    assert not alive({**tags, **heartbeat_tags(every=1, now=now - STALE_AFTER - 1)}, now=now)
    assert alive(tags, now=now)  # no heartbeat at all (written before ablate had one): alive, as before


def _wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_heartbeat_beats_until_stopped_and_survives_a_failed_beat():
    beats: list[float] = []
    with Heartbeat(lambda: beats.append(time.monotonic()), every=0.02):
        assert _wait_until(lambda: len(beats) >= 3)
    count = len(beats)
    time.sleep(0.1)
    assert len(beats) == count  # stopped means stopped

    calls: list[int] = []

    def busy_store() -> None:
        calls.append(1)
        raise RuntimeError("database is locked")

    with Heartbeat(busy_store, every=0.02):
        assert _wait_until(lambda: len(calls) >= 3)  # a failed beat is skipped, not fatal


def _invocation(tracker, experiment, study, trials, identity: Identity, parent_beat: float, trial_beat: float):
    """A parent run and one trial run under it, as an ablate run on `identity`'s host left them, beats back-dated."""
    parent = tracker.start_parent(experiment, "tiny", study, len(trials), identity.tags())
    trial = tracker.start_trial(experiment, parent, trials[0], identity.tags())
    tracker.set_tag(parent, HEARTBEAT, f"{time.time() - parent_beat:.0f}")
    tracker.set_tag(trial, HEARTBEAT, f"{time.time() - trial_beat:.0f}")
    return parent, trial


def test_runs_of_another_host_are_recovered_once_their_heartbeat_stops(tracked):
    tracker, experiment, study, trials = tracked
    live_parent, live_trial = _invocation(tracker, experiment, study, trials[:1], ELSEWHERE, 5, 5)
    dead_parent, dead_trial = _invocation(tracker, experiment, study, trials[1:2], ELSEWHERE, 3600, 3600)
    lost_parent, lost_trial = _invocation(tracker, experiment, study, trials[2:3], ELSEWHERE, 5, 3600)

    recovered, elsewhere = tracker.recover_stale(experiment)

    assert elsewhere == {trials[0].hash}  # still beating: left to it
    assert {tags["trial_hash"] for tags in recovered} == {trials[1].hash, trials[2].hash}
    states = {run: tracker.run_state(run) for run in (live_parent, live_trial, dead_parent, dead_trial, lost_trial)}
    assert states[live_parent].status == states[live_trial].status == "RUNNING"
    assert states[dead_parent].status == states[dead_trial].status == states[lost_trial].status == "FAILED"
    assert states[dead_trial].tags["reason"] == states[lost_trial].tags["reason"] == INTERRUPTED
    assert tracker.run_state(lost_parent).status == "RUNNING"  # its invocation beats on: only its worker is gone
    assert tracker.run_alive(live_trial) and not tracker.run_alive(lost_trial)


def _worker_of(tracker, parent: str, identity: Identity) -> Worker:
    config = WorkerConfig(tracking_uri=tracker.uri, experiment_id="0", parent_run_id=parent, parent=identity,
                          env_tags={}, data_dir=str(DATA_DIR), import_paths=())
    return Worker(Slot(0, "cpu", 1), config, emit=lambda event: None, die=lambda mid_event: None)


def test_a_worker_on_another_host_than_its_invocation_stops_when_the_invocation_stops_beating(tracked):
    tracker, experiment, study, trials = tracked
    beating, _ = _invocation(tracker, experiment, study, trials[:1], ELSEWHERE, 5, 5)
    silent, _ = _invocation(tracker, experiment, study, trials[1:2], ELSEWHERE, 3600, 3600)
    for parent, orphaned in ((beating, False), (silent, True)):
        worker = _worker_of(tracker, parent, ELSEWHERE)
        try:
            assert worker.orphaned() is orphaned
        finally:
            worker.close()


def test_a_store_that_fails_while_the_plan_is_read_is_an_error_not_a_run_without_a_plan():
    """A missing plan artifact means a run ablate did not make (None); a failed store must not read the same."""
    from types import SimpleNamespace

    from ablate.errors import StoreError
    from ablate.tracking import read_plan

    def fails(*args, **kwargs):
        raise StoreError("tracking store x.db: database is locked")

    def missing(*args, **kwargs):
        raise OSError("no such artifact")

    with pytest.raises(StoreError):
        read_plan(SimpleNamespace(client=SimpleNamespace(download_artifacts=fails)), "run")
    assert read_plan(SimpleNamespace(client=SimpleNamespace(download_artifacts=missing)), "run") is None


def test_a_search_trials_run_is_left_to_the_search_to_recover(tracked):
    """Its claim is its Optuna trial: ablate.run's search recovery ends it, in line with Optuna (test_search)."""
    tracker, experiment, study, trials = tracked
    _, searched = _invocation(tracker, experiment, study, trials[:1], ELSEWHERE, 3600, 3600)
    tracker.set_tag(searched, "role", "search")
    recovered, _ = tracker.recover_stale(experiment)
    assert tracker.run_state(searched).status == "RUNNING" and recovered == []
