"""Exactly once under concurrency: claims in the store, a fresh store opened by several processes, search identity."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time

import mlflow
import pytest

from ablate.search import optuna_name, search_identity
from ablate.spec import parse_study
from ablate.tracking import CLAIM_TOKEN, HEARTBEAT, INTERRUPTED, Identity, Tracker
from tests.conftest import DATA_DIR, REPO, TINY_STUDY

ELSEWHERE = Identity("a-node-that-is-not-this-one", 4242, "1")


def _parent(tracker, experiment, study, identity: Identity = None, beat_age: float = 0.0) -> str:
    identity = identity or Identity.of_this_process()
    parent = tracker.start_parent(experiment, "tiny", study, 4, identity.tags())
    tracker.set_tag(parent, HEARTBEAT, f"{time.time() - beat_age:.0f}")
    return parent


def _active_runs(tracker, experiment, trial_hash: str) -> list:
    return tracker.search(experiment, f"tags.role = 'trial' and tags.trial_hash = '{trial_hash}'")


def _claim_as(tracker, experiment, parent: str, trial, identity: Identity) -> str:
    """A claim made by another process (`identity`), as claim_trial makes one: its lease, then its run."""
    lease = tracker.claims.acquire(tracker.scope(experiment), trial.hash, identity, parent).lease
    run = tracker.start_trial(experiment, parent, trial, {**identity.tags(), CLAIM_TOKEN: str(lease.token)})
    tracker.claims.attach(lease, run)
    return run


def _expire(tracker) -> None:
    tracker.claims._write("UPDATE ablate_claims SET expires = 0")


def test_a_claim_holds_when_no_one_else_has_the_trial(tracked):
    tracker, experiment, study, trials = tracked
    claim = tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[0], {})
    assert claim.run_id is not None and tracker.run_state(claim.run_id).status == "RUNNING"
    assert tracker.run_state(claim.run_id).tags[CLAIM_TOKEN] == str(claim.lease.token) == "1"


def test_a_live_claim_or_a_committed_trial_is_never_claimed_again(tracked):
    tracker, experiment, study, trials = tracked
    parent = _parent(tracker, experiment, study)
    assert tracker.claim_trial(experiment, parent, trials[0], Identity.of_this_process().tags()).run_id
    finished = tracker.claim_trial(experiment, parent, trials[1], {})
    assert tracker.commit_trial(finished.lease, finished.run_id, {"test_accuracy": 0.5}, step=2)

    other = _parent(tracker, experiment, study)
    assert tracker.claim_trial(experiment, other, trials[0], {}).elsewhere == "running"
    assert tracker.claim_trial(experiment, other, trials[1], {}).elsewhere == "done"
    assert len(_active_runs(tracker, experiment, trials[0].hash)) == 1
    state = tracker.run_state(finished.run_id)
    assert state.status == "FINISHED" and state.metrics["test_accuracy"] == 0.5


def test_a_dead_claim_is_taken_over_wherever_it_was_made(tracked):
    tracker, experiment, study, trials = tracked
    for identity in (Identity(Identity.of_this_process().host, 2**22 + 17, "1"), ELSEWHERE):  # gone here; silent there
        dead = _claim_as(tracker, experiment, _parent(tracker, experiment, study, identity, beat_age=3600), trials[0],
                         identity)
        if identity is ELSEWHERE:
            _expire(tracker)

        claim = tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[0], {})

        assert claim.run_id is not None
        state = tracker.run_state(dead)
        assert state.status == "FAILED" and state.tags["reason"] == INTERRUPTED
        tracker.settle(claim.run_id, "FAILED", force=True)  # given up, for the next identity


def test_a_worker_taken_for_gone_cannot_finish_its_trial_after_the_takeover(tracked):
    """The race of issue 27: a worker finishes just as another invocation takes it for gone. Whichever of the two
    conditional writes comes first wins; the run of the other is never FINISHED, and a FINISHED one is never
    overwritten."""
    tracker, experiment, study, trials = tracked
    slow = tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[0], {})
    _expire(tracker)  # its heartbeat stalled: taken for gone, though it lives
    taker = tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[0], {})
    assert taker.run_id is not None and tracker.run_state(slow.run_id).status == "FAILED"
    assert not tracker.commit_trial(slow.lease, slow.run_id, {"test_accuracy": 0.1}, step=2)
    assert tracker.run_state(slow.run_id).status == "FAILED"
    assert "test_accuracy" not in tracker.run_state(slow.run_id).metrics  # trained once, as the store counts it

    finished = tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[1], {})
    assert tracker.commit_trial(finished.lease, finished.run_id, {"test_accuracy": 0.7}, step=2)
    _expire(tracker)
    assert tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[1], {}).elsewhere == "done"
    assert tracker.settle(finished.run_id, "FAILED", force=True).state.status == "FINISHED"


def test_a_trial_committed_by_a_worker_that_died_before_recording_it_is_completed(tracked):
    tracker, experiment, study, trials = tracked
    claim = tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[0], {})
    assert tracker.claims.commit(claim.lease, claim.run_id, {"metrics": {"test_accuracy": 0.8}, "step": 2,
                                                             "timestamp": 1_700_000_000_000})  # then it died

    settled = tracker.settle(claim.run_id, "FAILED", error="gone", force=True)

    assert settled.state.status == "FINISHED" and not settled.ended_here
    assert settled.state.metrics["test_accuracy"] == 0.8
    assert tracker.claims.states(tracker.scope(experiment)) == {trials[0].hash: "finished"}


def test_a_finished_run_from_before_claims_counts_as_done(tracked):
    tracker, experiment, study, trials = tracked
    legacy = tracker.start_trial(experiment, _parent(tracker, experiment, study), trials[0], {})
    tracker.finish(legacy)
    assert tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[0], {}).elsewhere == "done"
    assert tracker.claims.states(tracker.scope(experiment)) == {trials[0].hash: "finished"}


def test_claimants_racing_for_one_trial_leave_exactly_one_claim(tracked):
    """Eight claimants at the same moment (a barrier), each its own invocation: one wins, the others yield."""
    tracker, experiment, study, trials = tracked
    parents = [_parent(tracker, experiment, study) for _ in range(8)]
    barrier, claims = threading.Barrier(len(parents)), []

    def claim(parent: str) -> None:
        mine = Tracker(tracker.uri)
        barrier.wait()
        claims.append(mine.claim_trial(experiment, parent, trials[0], {}))

    threads = [threading.Thread(target=claim, args=(p,)) for p in parents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    won = [c for c in claims if c.run_id is not None]
    assert len(claims) == 8 and len(won) == 1
    assert {c.elsewhere for c in claims if c.run_id is None} == {"running"}
    assert [r.info.run_id for r in _active_runs(tracker, experiment, trials[0].hash)] == [won[0].run_id]


def _open_store(uri: str, name: str, queue) -> None:
    try:
        if name == "mlflow":  # what `mlflow ui` or a notebook does: MLflow's own first use, no ablate in between
            from mlflow.tracking import MlflowClient

            MlflowClient(uri).search_experiments()
            queue.put("ok")
        else:
            queue.put(Tracker(uri).experiment(name))
    except BaseException as exc:  # noqa: BLE001 — reported to the test
        queue.put(f"{type(exc).__name__}: {exc}")


def test_a_fresh_store_opened_by_several_processes_at_once_works_for_all(tmp_path):
    """Ablate invocations and MLflow's own first use race on a new mlflow.db: no error, one experiment."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    names = ["tiny", "mlflow", "tiny"]  # one MLflow opener: two of them race each other, which is MLflow's own affair
    processes = [context.Process(target=_open_store, args=(uri, name, queue)) for name in names]
    for process in processes:
        process.start()
    results = [queue.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    ids = [r for r in results if r != "ok"]
    assert results.count("ok") == 1 and len(set(ids)) == 1 and ids[0].isdigit(), results
    assert not list(tmp_path.glob(".mlflow.db.*"))  # no private store left behind


def test_a_store_is_created_on_a_filesystem_without_hard_links(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")  # what some network and FUSE mounts answer

    monkeypatch.setattr(os, "link", no_links)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = Tracker(uri).experiment("tiny")
    assert experiment and (tmp_path / "mlflow.db").exists()
    assert mlflow.MlflowClient(uri).get_experiment_by_name("tiny") is not None
    assert not list(tmp_path.glob(".mlflow.db.*"))  # the private store was moved, not left behind


def test_a_study_named_after_an_experiment_ablate_did_not_make_is_refused(tmp_path, store):
    from ablate.errors import StoreError

    mlflow.MlflowClient(store).create_experiment("tiny")  # someone's own experiment
    with pytest.raises(StoreError, match="ablate did not create"):
        Tracker(store).experiment("tiny")


def test_a_study_name_too_long_for_a_file_name_gets_a_short_artifact_folder(tmp_path, store):
    from ablate.tracking import artifact_folder

    name = "a-very-long-study-name-" * 20
    experiment = Tracker(store).experiment(name)
    location = mlflow.MlflowClient(store).get_experiment(experiment).artifact_location
    assert len(location.rsplit("/", 1)[1]) < 120 and location.endswith(artifact_folder(name))
    assert artifact_folder("linearity") == "linearity" and artifact_folder("a/b") != "a/b"


# -- search identity -------------------------------------------------------------------

SEARCH = """
[study]
name = "tiny-search"
design = "search"
seeds = [0]

[data]
val_size = 500
train_limit = 1000
test_limit = 500

[train]
epochs = {epochs}

[model]
kind = "mlp"
hidden = [32]

[search]
trials = 4
confirm_seeds = [1]

[search.space]
"train.lr" = {{ low = 1e-4, high = 1e-2, log = true }}
"""


def test_a_search_is_one_optuna_study_until_its_fixed_settings_or_space_change():
    one = parse_study(SEARCH.format(epochs=1))
    assert optuna_name(one) == f"tiny-search@{search_identity(one)}"
    assert search_identity(parse_study(SEARCH.format(epochs=1).replace("trials = 4", "trials = 9"))) == \
        search_identity(one)  # a larger budget continues the search
    assert search_identity(parse_study(SEARCH.format(epochs=2))) != search_identity(one)
    assert search_identity(parse_study(SEARCH.format(epochs=1).replace("1e-2", "1e-1"))) != search_identity(one)


@pytest.mark.slow
def test_a_search_whose_epochs_changed_reuses_none_of_its_trials(write_study, store, capsys):
    from ablate.cli import main

    path = write_study(SEARCH.format(epochs=1))
    assert main(["run", str(path), "--tracking-uri", store]) == 0
    capsys.readouterr()
    path.write_text(SEARCH.format(epochs=2))
    assert main(["run", str(path), "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    assert "4 trials: 0 already done, 4 to train" in out  # before: "4 already done"
    assert "a new Optuna study 'tiny-search@" in out
    assert main(["plan", str(path), "--tracking-uri", store]) == 0  # what the store holds, as the README promises
    out = capsys.readouterr().out
    assert "4 of 4 trials done" in out and "earlier version 'tiny-search@" in out and "(4 trials)" in out


# -- two invocations of one study at once ----------------------------------------------

@pytest.mark.slow
def test_two_invocations_of_one_study_at_once_train_each_trial_once(write_study, tmp_path):
    study = write_study(TINY_STUDY.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "ABLATE_DATA_DIR": str(DATA_DIR)}
    command = [sys.executable, "-m", "ablate", "run", str(study), "--tracking-uri", uri, "--max-workers", "1"]
    runs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]  # at the same moment, on a store neither has created yet
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs

    trials = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.role = 'trial'",
                                output_format="pandas") if mlflow.set_tracking_uri(uri) is None else None
    finished = trials[trials["status"] == "FINISHED"].groupby("tags.trial_hash").size()
    assert len(finished) == 6 and set(finished) == {1}, finished  # before: every hash twice
    assert any("another invocation" in out for out in outputs)
