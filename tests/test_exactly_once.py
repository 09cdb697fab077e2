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
from ablate.tracking import HEARTBEAT, INTERRUPTED, Identity, Tracker
from tests.conftest import DATA_DIR, REPO, TINY_STUDY

ELSEWHERE = Identity("a-node-that-is-not-this-one", 4242, "1")


def _parent(tracker, experiment, study, identity: Identity = None, beat_age: float = 0.0) -> str:
    identity = identity or Identity.of_this_process()
    parent = tracker.start_parent(experiment, "tiny", study, 4, identity.tags())
    tracker.set_tag(parent, HEARTBEAT, f"{time.time() - beat_age:.0f}")
    return parent


def _active_runs(tracker, experiment, trial_hash: str) -> list:
    return tracker.search(experiment, f"tags.role = 'trial' and tags.trial_hash = '{trial_hash}'")


def test_a_claim_holds_when_no_one_else_has_the_trial(tracked):
    tracker, experiment, study, trials = tracked
    claim = tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[0], {})
    assert claim.run_id is not None and tracker.run_state(claim.run_id).status == "RUNNING"


def test_a_live_claim_or_a_finished_run_is_never_claimed_again(tracked):
    tracker, experiment, study, trials = tracked
    parent = _parent(tracker, experiment, study)
    assert tracker.claim_trial(experiment, parent, trials[0], Identity.of_this_process().tags()).run_id
    finished = tracker.claim_trial(experiment, parent, trials[1], {})
    tracker.finish(finished.run_id)

    other = _parent(tracker, experiment, study)
    assert tracker.claim_trial(experiment, other, trials[0], {}).elsewhere == "running"
    assert tracker.claim_trial(experiment, other, trials[1], {}).elsewhere == "done"
    assert len(_active_runs(tracker, experiment, trials[0].hash)) == 1  # the loser's claim is gone, not FAILED
    assert len(_active_runs(tracker, experiment, trials[1].hash)) == 1


def test_a_dead_claim_is_taken_over_wherever_it_was_made(tracked):
    tracker, experiment, study, trials = tracked
    for identity in (Identity(Identity.of_this_process().host, 2**22 + 17, "1"), ELSEWHERE):  # gone here; silent there
        dead_parent = _parent(tracker, experiment, study, identity, beat_age=3600)
        dead = tracker.start_trial(experiment, dead_parent, trials[0], identity.tags())
        tracker.set_tag(dead, HEARTBEAT, f"{time.time() - 3600:.0f}")

        claim = tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[0], {})

        assert claim.run_id is not None
        state = tracker.run_state(dead)
        assert state.status == "FAILED" and state.tags["reason"] == INTERRUPTED
        tracker.client.delete_run(claim.run_id)


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
    from ablate.tracking._tracker import artifact_folder

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


def test_a_run_that_ended_since_the_search_is_judged_by_its_end_not_overwritten(tracked, monkeypatch):
    """The search saw it RUNNING; its worker finished it a moment later: it is done, never marked FAILED."""
    tracker, experiment, study, trials = tracked
    gone = Identity(Identity.of_this_process().host, 2**22 + 17, "1")  # its process has exited since
    finished = tracker.start_trial(experiment, _parent(tracker, experiment, study), trials[0], gone.tags())
    stale = tracker.search(experiment, "tags.role = 'trial'")
    tracker.finish(finished)
    monkeypatch.setattr(tracker, "search", lambda *args: stale)

    claim = tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[0], {})

    assert claim.run_id is None and claim.elsewhere == "done"
    assert tracker.run_state(finished).status == "FINISHED"
