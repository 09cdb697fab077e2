"""The dispatcher on the inline backend: what it does when workers die at awkward moments, with scripted workers
(the exact moment a test needs) and with the real worker in this process (trials trained and logged for real)."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import mlflow
import pytest

from ablate.design import Pack, expand
from ablate.run import (
    Dispatcher,
    Done,
    EventChannel,
    Finished,
    InlineBackend,
    Orphaned,
    Outcome,
    RunSummary,
    Slot,
    Started,
    WorkerDied,
    load,
    prepare,
    run_study,
    task_key,
    task_trials,
)
from ablate.spec import load_study
from ablate.tracking import RunState, Settled
from tests._helpers import QuietReporter
from tests.conftest import DATA_DIR, TINY_STUDY


class _Ledger:
    """Records what the dispatcher writes to the store; runs have the statuses the test gives them."""

    def __init__(self, statuses: dict[str, str] | None = None, claimed: dict[str, tuple[str, str]] | None = None):
        self.finished: list[tuple[str, str, str | None]] = []
        self.statuses = statuses or {}
        self.claimed = claimed or {}  # run id → (status, trial hash): runs in the store the dispatcher never heard of

    def settle(
        self, run_id: str, status: str, error: str | None = None, reason: str | None = None, force: bool = False
    ) -> Settled:
        """As Tracker.settle: a run that ended stays as it is; a RUNNING one is ended here."""
        state = RunState(self.statuses.get(run_id, "RUNNING"), {"test_accuracy": 0.9, "train_seconds": 1.0}, {})
        if state.status != "RUNNING":
            return Settled(state)
        self.finished.append((run_id, status, reason))
        return Settled(RunState(status, state.metrics, {"reason": reason or "", "error": error or ""}), ended_here=True)

    def running_runs(self, experiment_id: str, parent_id: str, trial_hash: str) -> list[str]:
        return [
            run_id for run_id, (status, hash_) in self.claimed.items() if status == "RUNNING" and hash_ == trial_hash
        ]



def _trains(slot, task, emit) -> None:
    """A healthy worker: every trial of the task started and finished, then Done."""
    for trial in task_trials(task):
        emit(Started(slot.index, task_key(task), trial, f"run-{trial.hash}"))
        emit(Finished(slot.index, task_key(task), trial.hash, Outcome(test_accuracy=0.9, train_seconds=1.0)))
    emit(Done(slot.index, task_key(task)))


def _dies_before_starting(slot, task, emit) -> None:
    raise WorkerDied("right after it was handed the task")


def _scripted(*behaviours):
    """A scripted worker for every slot: the n-th task handed out runs the n-th behaviour."""
    left = deque(behaviours)

    def execute(slot, task, emit) -> None:
        left.popleft()(slot, task, emit)

    execute.left = left
    return execute


@pytest.fixture
def trials(write_study):
    return expand(load_study(write_study(TINY_STUDY)))  # linear s0, s1; mlp s0, s1


def _dispatcher(execute, ledger: _Ledger, slots: int = 1) -> tuple[Dispatcher, InlineBackend, RunSummary]:
    backend = InlineBackend([Slot(i, "cpu", 1) for i in range(slots)], execute=execute)
    summary = RunSummary("exp", "parent", 4, 0)
    return Dispatcher(backend, ledger, QuietReporter(), summary), backend, summary


def test_a_task_handed_to_a_worker_that_just_died_goes_back_to_the_queue(trials):
    """The worker finished a trial, then died as it was handed a pack: the pack never started, so nothing of it is
    recorded lost, and a fresh worker trains it."""
    first, pack = trials[0], Pack(tuple(trials[2:]))
    ledger, script = _Ledger(), _scripted(_trains, _dies_before_starting, _trains)
    dispatcher, backend, summary = _dispatcher(script, ledger)
    replaced = backend.workers[0]
    dispatcher.run([first, pack])
    assert [t for t, _ in summary.finished] == [first, *pack.trials]
    assert summary.failed == [] and ledger.finished == []
    assert backend.workers[0] is not replaced and not script.left  # a fresh worker ran the pack's second hand-out


def test_a_run_the_worker_ended_before_dying_unheard_keeps_its_status(trials):
    """FINISHED in the store, but the worker died before its Finished event: not overwritten as worker-lost."""
    pack = Pack(tuple(trials[2:]))

    def dies_mid_pack(slot, task, emit) -> None:
        for trial, run_id in zip(task.trials, ("run-a", "run-b")):
            emit(Started(slot.index, task.key, trial, run_id))
        raise WorkerDied("after ending run-a, before saying so")

    ledger = _Ledger({"run-a": "FINISHED"})
    dispatcher, backend, summary = _dispatcher(_scripted(dies_mid_pack), ledger)
    dispatcher.run([pack])
    assert [t for t, _ in summary.finished] == [pack.trials[0]]
    assert ledger.finished == [("run-b", "FAILED", "worker-lost")]
    assert [(t, reason) for t, reason, _ in summary.failed] == [(pack.trials[1], "worker-lost")]
    assert (
        "the inline worker died (after ending run-a, before saying so) while training this trial"
        in summary.failed[0][2]
    )
    assert backend.dead() == {}  # nothing left to do: the slot is retired, not reported again


def test_a_later_phase_replaces_workers_that_died_idle_in_an_earlier_one(trials):
    """A search's confirm runs come after its trials: a worker that died when there was nothing left to give it was
    retired; the confirm phase must get a fresh worker for that slot, not run nothing."""

    def trains_then_dies(slot, task, emit) -> None:
        _trains(slot, task, emit)
        raise WorkerDied("idle, after its task")

    dispatcher, backend, summary = _dispatcher(_scripted(trains_then_dies, _trains), _Ledger())
    dispatcher.run(trials[:1])
    assert backend.dead() == {} and dispatcher.held[0].stopped
    dispatcher.run(trials[1:2])
    assert [t for t, _ in summary.finished] == trials[:2] and not dispatcher.held[0].stopped


def test_a_lost_task_goes_back_to_the_front_of_the_queue(trials):
    """Two slots; slot 0 dies as it starts its first trial: that trial is trained next, before the ones still
    queued, and what slot 1 is doing is not run early to look for what the dead worker said last."""
    first, second, third, fourth = trials
    dispatcher, _, summary = _dispatcher(_scripted(_dies_before_starting, *[_trains] * 4), _Ledger(), slots=2)
    dispatcher.run(list(trials))
    assert [t for t, _ in summary.finished] == [second, first, third, fourth] and summary.failed == []


def test_an_error_escaping_a_worker_is_its_death_not_the_studys(trials):
    """A worker process dies of an error its own handling did not catch (the store gone mid-call): so does an
    inline one; the trial it had started is lost, the rest go on."""

    def store_fails_mid_trial(slot, task, emit) -> None:
        emit(Started(slot.index, task_key(task), task, "run-x"))
        raise RuntimeError("database is locked")

    ledger = _Ledger()
    dispatcher, _, summary = _dispatcher(_scripted(store_fails_mid_trial, _trains), ledger)
    dispatcher.run(trials[:2])
    assert [t for t, _ in summary.finished] == [trials[1]] and ledger.finished == [("run-x", "FAILED", "worker-lost")]
    assert "died of RuntimeError: database is locked" in summary.failed[0][2]


def test_workers_that_keep_dying_are_given_up_on(trials):
    """Every worker dies before finishing anything: the rest is failed as not run instead of restarting forever."""
    dispatcher, _, summary = _dispatcher(lambda slot, task, emit: _dies_before_starting(slot, task, emit), _Ledger())
    dispatcher.run(trials)
    assert summary.finished == [] and len(summary.failed) == len(trials)
    assert {reason for _, reason, _ in summary.failed} == {"worker-lost"}
    assert {error for *_, error in summary.failed} == {"not run: workers kept dying"}


def test_a_worker_whose_parent_is_gone_stops_as_orphaned():
    """Its event pipe breaks when the parent dies: that means orphaned (trial interrupted), not a trial error."""
    import multiprocessing

    reader, writer = multiprocessing.Pipe(duplex=False)
    reader.close()
    with pytest.raises(Orphaned):
        EventChannel(writer).put(Done(0, "key"))


# ---------------------------------------------------------------------------- the real worker, in this process


def _run_inline(study_path: Path, store: str) -> RunSummary:
    prepared = prepare(
        load(study_path),
        tracking_uri=store,
        data_dir=DATA_DIR,
        overrides={"devices": "cpu", "max_workers": 2},
        backend=InlineBackend,
    )
    return run_study(prepared, QuietReporter())


def _trial_runs(store: str):
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["tiny"])
    return runs[runs["tags.role"] == "trial"]


@pytest.mark.slow
def test_the_inline_backend_trains_as_worker_processes_do(write_study, tmp_path):
    """The same worker code, in this process: the metrics of a local run with one worker process, to the bit."""
    from ablate.cli import main

    study = write_study(TINY_STUDY)
    inline, local = f"sqlite:///{tmp_path / 'inline.db'}", f"sqlite:///{tmp_path / 'local.db'}"
    summary = _run_inline(study, inline)
    assert len(summary.finished) == 4 and summary.failed == [] and not summary.interrupted
    assert main(["run", str(study), "--tracking-uri", local, "--devices", "cpu", "--max-workers", "1"]) == 0
    columns = ["metrics.test_accuracy", "metrics.test_loss", "metrics.val_accuracy", "metrics.val_loss"]
    ours = _trial_runs(inline).set_index("tags.trial_hash")[columns].sort_index()
    theirs = _trial_runs(local).set_index("tags.trial_hash")[columns].sort_index()
    assert len(ours) == 4 and ours.equals(theirs)


def test_an_inline_worker_killed_mid_trial_is_lost_and_resume_trains_it_once(write_study, tmp_path, monkeypatch):
    study, store = write_study(TINY_STUDY), f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("ABLATE_TEST_FAULTS", json.dumps({"mlp:0": "kill"}))
    summary = _run_inline(study, store)
    assert len(summary.finished) == 3 and [(t.stage, t.seed, reason) for t, reason, _ in summary.failed] == [
        ("mlp", 0, "worker-lost")
    ]
    lost = _trial_runs(store).query("status == 'FAILED'")
    assert list(lost["tags.reason"]) == ["worker-lost"] and "inline worker died" in lost["tags.error"].iloc[0]

    monkeypatch.delenv("ABLATE_TEST_FAULTS")
    again = _run_inline(study, store)
    assert again.skipped == 3 and [(t.stage, t.seed) for t, _ in again.finished] == [("mlp", 0)]
    finished = _trial_runs(store).query("status == 'FINISHED'")
    assert len(finished) == 4 and finished["tags.trial_hash"].is_unique


def test_ctrl_c_on_the_inline_backend_kills_the_running_trial_and_hands_out_nothing_more(
    write_study, tmp_path, monkeypatch
):
    """Ctrl-C lands in the dispatcher's own process while the inline worker trains: the trial's run ends KILLED, no
    further trial starts, the parent run ends KILLED, and Ctrl-C works as before afterwards. (The MLP's trials,
    the costlier, are handed out first: longest first.)"""
    import os
    import signal
    import threading

    study, store = write_study(TINY_STUDY), f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("ABLATE_TEST_FAULTS", json.dumps({"linear:0": "slow"}))
    monkeypatch.setenv("ABLATE_TEST_SLOW_SECONDS", "60")

    def press_ctrl_c_once_linear_runs() -> None:
        for _ in range(1200):
            try:  # only once the run created the store whole: two migrations in one process trip over alembic's globals
                runs = _trial_runs(store) if (tmp_path / "mlflow.db").exists() else None
                if runs is None:
                    raise FileNotFoundError(store)
                if ((runs["status"] == "RUNNING") & (runs["tags.stage"] == "linear")).any():
                    break
            except Exception:  # the store or the experiment is not there yet
                pass
            threading.Event().wait(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c_once_linear_runs, daemon=True)
    presser.start()
    summary = _run_inline(study, store)
    presser.join(timeout=5)
    assert summary.interrupted and [(t.stage, t.seed) for t, _ in summary.finished] == [("mlp", 0), ("mlp", 1)]
    runs = _trial_runs(store).set_index(["tags.stage", "tags.seed"])
    assert list(runs["status"].sort_index().items()) == [
        (("linear", "0"), "KILLED"),
        (("mlp", "0"), "FINISHED"),
        (("mlp", "1"), "FINISHED"),
    ]
    assert runs.loc[("linear", "0"), "tags.reason"] == "interrupted"
    mlflow.set_tracking_uri(store)
    parents = mlflow.search_runs(experiment_names=["tiny"]).query("`tags.role` == 'parent'")
    assert list(parents["status"]) == ["KILLED"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _dies_mid_trial(slot, task, emit) -> None:
    """Started the trial's run, then the worker (its node) was lost."""
    emit(Started(slot.index, task_key(task), task, f"lost-{task.hash}"))
    raise WorkerDied("its node was lost")


def test_a_trial_lost_with_its_node_is_trained_again_where_the_backend_retries(trials):
    """A cluster's backend (retries_lost > 0): the lost run stays FAILED worker-lost, and the trial is trained again
    by a fresh worker, first in the queue, up to retries_lost times; then it stays FAILED."""
    ledger = _Ledger()
    dispatcher, backend, summary = _dispatcher(_scripted(_dies_mid_trial, _trains, _trains), ledger)
    backend.retries_lost = 1
    dispatcher.run(trials[:2])
    assert [t for t, _ in summary.finished] == trials[:2] and summary.failed == []
    assert ledger.finished == [(f"lost-{trials[0].hash}", "FAILED", "worker-lost")]

    ledger = _Ledger()
    dispatcher, backend, summary = _dispatcher(_scripted(_dies_mid_trial, _dies_mid_trial, _trains), ledger)
    backend.retries_lost = 1
    dispatcher.run(trials[:2])
    assert [t for t, _ in summary.finished] == [trials[1]]
    assert [(t, reason) for t, reason, _ in summary.failed] == [(trials[0], "worker-lost")]
    assert [status for _, status, _ in ledger.finished] == ["FAILED", "FAILED"]


def test_a_slot_the_cluster_has_no_room_to_refill_is_retired_and_the_others_carry_on(trials):
    """replace() says no (the lost node took its resources): the slot is retired; the other slot trains the rest.
    With no slot left, what is left is failed as not run, instead of waiting forever."""

    class NoRoom(InlineBackend):
        def replace(self, slot: int) -> bool:
            return False

    lost_first = iter([True])

    def execute(slot, task, emit) -> None:
        if slot.index == 0 and next(lost_first, False):
            _dies_mid_trial(slot, task, emit)
        _trains(slot, task, emit)

    backend = NoRoom([Slot(i, "cpu", 1) for i in range(2)], execute=execute)
    backend.retries_lost = 1
    summary = RunSummary("exp", "parent", 4, 0)
    dispatcher = Dispatcher(backend, _Ledger(), QuietReporter(), summary)
    dispatcher.run(list(trials))
    assert sorted(t.hash for t, _ in summary.finished) == sorted(t.hash for t in trials) and summary.failed == []
    assert dispatcher.held[0].stopped

    backend = NoRoom([Slot(0, "cpu", 1)], execute=_dies_mid_trial)
    summary = RunSummary("exp", "parent", 4, 0)
    Dispatcher(backend, _Ledger(), QuietReporter(), summary).run(list(trials))
    assert summary.finished == [] and len(summary.failed) == len(trials)
    assert {error for *_, error in summary.failed[1:]} == {"not run: no worker left (every slot's worker was lost)"}


def test_what_a_lost_slot_leaves_goes_to_a_slot_that_had_run_out_of_work(trials):
    """Slot 1 finished its trial and idles (nothing left to hand out); then slot 0 is lost in its second trial and
    cannot be refilled: slot 1 trains that trial, rather than the run ending with it neither trained nor failed."""

    class NoRoom(InlineBackend):
        def replace(self, slot: int) -> bool:
            return False

    handed = []

    def execute(slot, task, emit) -> None:
        handed.append(slot.index)
        if handed.count(0) == 2 and slot.index == 0:
            _dies_mid_trial(slot, task, emit)
        _trains(slot, task, emit)

    backend = NoRoom([Slot(i, "cpu", 1) for i in range(2)], execute=execute)
    backend.retries_lost = 1
    summary = RunSummary("exp", "parent", 3, 0)
    Dispatcher(backend, _Ledger(), QuietReporter(), summary).run(trials[:3])
    assert handed == [0, 1, 0, 1]
    assert sorted(t.hash for t, _ in summary.finished) == sorted(t.hash for t in trials[:3]) and summary.failed == []


def test_a_claim_whose_started_never_arrived_is_ended_before_its_trial_is_queued_again(trials):
    """The worker created the trial's run, then was lost before its Started reached the dispatcher: that RUNNING run
    (which another host would take for alive a while) ends FAILED worker-lost, and the trial trains again."""
    trial = trials[0]

    def claims_then_dies(slot, task, emit) -> None:
        raise WorkerDied("lost just after claiming")

    ledger = _Ledger(claimed={"unheard": ("RUNNING", trial.hash), "other": ("RUNNING", trials[1].hash)})
    dispatcher, _, summary = _dispatcher(_scripted(claims_then_dies, _trains), ledger)
    dispatcher.run([trial])
    assert ledger.finished == [("unheard", "FAILED", "worker-lost")]
    assert [t for t, _ in summary.finished] == [trial] and summary.failed == []
