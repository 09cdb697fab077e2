"""design = "search": the space, seeded suggestions, pruning, resume, parallel asks, the confirm phase."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from functools import partial
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest

import ablate
from ablate import search
from ablate.cli import main
from ablate.spec import parse_study, resolve_point
from ablate.tracking import alive
from tests._helpers import TINY_SEARCH

SEARCH = TINY_SEARCH  # the tiny search of every kind of space entry


def test_space_parses_ranges_choices_and_conditions():
    study = parse_study(SEARCH.format(trials=4))
    lr, dropout, schedule, gamma = study.search.space
    assert (lr.kind, lr.log, lr.low, lr.high) == ("float", True, 1e-6, 1.0)
    assert dropout.kind == "float" and schedule.kind == "categorical"
    assert schedule.labels == ("constant", "step(step_size=1)")
    assert gamma.when == (("train.schedule", ({"kind": "step", "step_size": 1},)),)
    assert study.search.confirm_seeds == (10, 11) and study.search.settings.maximize
    point = resolve_point(study, (("train.lr", 0.01), ("train.schedule", "constant"), ("train.schedule.gamma", 0.5)))
    assert point.train.lr == 0.01 and point.train.schedule.kind == "constant"
    assert dict(point.point) == {"train.lr": 0.01, "train.schedule": "constant"}  # gamma meant nothing: dropped


def test_default_confirm_seeds_are_fresh():
    study = parse_study(
        SEARCH.format(trials=4).replace("confirm_seeds = [10, 11]\n", "").replace("seeds = [0]", "seeds = [3, 5]")
    )
    assert study.search.confirm_seeds == (6, 7, 8)


def _drive(storage: str, n: int) -> list[dict]:
    """Ask and tell as the workers do, one at a time: the suggested parameters in order."""
    study_spec = parse_study(SEARCH.format(trials=n)).search
    asked = []
    for _ in range(n):
        study = search.open_study(study_spec, storage, "srch", epochs=3)
        trial = study.ask()
        point = dict(search.suggest(trial, study_spec.space))
        asked.append(trial.params)
        study.tell(trial, -abs(point["train.lr"] - 0.01))  # any deterministic objective
    return asked


def test_same_seed_same_suggestions(tmp_path):
    first = _drive(str(tmp_path / "a.log"), 6)
    again = _drive(str(tmp_path / "b.log"), 6)
    assert first == again and len({json.dumps(p, sort_keys=True) for p in first}) == 6
    gamma_only_with_step = all(("train.schedule.gamma" in p) == p["train.schedule"].startswith("step") for p in first)
    assert gamma_only_with_step


def test_median_pruner_stops_a_bad_trial():
    spec = parse_study(SEARCH.format(trials=4).replace("startup_trials = 2", "startup_trials = 1")).search
    study = optuna.create_study(direction="maximize", pruner=search.make_pruner(spec.settings, epochs=3))
    good = study.ask()
    for epoch, value in enumerate([0.8, 0.9, 0.95], 1):
        good.report(value, epoch)
    study.tell(good, 0.95)
    bad = study.ask()
    bad.report(0.1, 1)
    assert bad.should_prune()


def test_stale_running_trial_is_failed_and_retried(tmp_path):
    spec = parse_study(SEARCH.format(trials=4)).search
    study = search.open_study(spec, str(tmp_path / "j.log"), "srch", epochs=3)
    trial = study.ask()
    search.suggest(trial, spec.space)
    for key, value in (
        (search.HOST_ATTR, os.uname().nodename),
        (search.PID_ATTR, 2**22 + 7),
        (search.PID_START_ATTR, "1"),
    ):
        trial.set_user_attr(key, value)
    assert len(search.recover_stale(study, alive)) == 1
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]  # failed, its params enqueued
    assert search.finished_count(study) == 0  # an interrupted trial does not count towards `trials`


def test_recovery_brings_search_runs_in_line_with_their_optuna_trials(tmp_path, tracked):
    """A trial whose asker is gone is failed and its point enqueued again, and its run ends FAILED; a trial told
    COMPLETE by a worker that died before recording it gets its run completed FINISHED with the objective; the gone
    asker's late tell finds its trial ended and records nothing."""
    from ablate.run._study import _recover_search

    tracker, experiment, _, trials = tracked
    spec = parse_study(SEARCH.format(trials=4)).search
    study = search.open_study(spec, str(tmp_path / "j.log"), "srch", epochs=3)
    gone, told = study.ask(), study.ask()
    for trial in (gone, told):
        search.suggest(trial, spec.space)
        for key, value in (
            (search.HOST_ATTR, os.uname().nodename),
            (search.PID_ATTR, 2**22 + 7),
            (search.PID_START_ATTR, "1"),
        ):
            trial.set_user_attr(key, value)
    study.tell(told, 0.7)
    runs = {}
    for trial in (gone, told):
        runs[trial.number] = tracker.start_trial(
            experiment, "no-parent", trials[0], {"optuna_trial": str(trial.number)}, role="search"
        )

    recovered = _recover_search(tracker, experiment, study)

    assert [r["optuna_trial"] for r in recovered] == [str(gone.number)]
    assert tracker.run_state(runs[gone.number]).status == "FAILED"
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "COMPLETE", "WAITING"]  # the point, again
    completed = tracker.run_state(runs[told.number])
    assert completed.status == "FINISHED" and completed.metrics["objective"] == 0.7
    late = search.AskedTrial(study, gone, trials[0], "val_accuracy")
    assert late.complete(0.9) is False and study.trials[gone.number].state.name == "FAIL"


def _optuna_name(trials: int) -> str:
    """The Optuna study of the search: its name and identity (a budget of more trials continues the same one)."""
    from ablate.search import optuna_name

    return optuna_name(parse_study(SEARCH.format(trials=trials)))


def _runs(store: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(experiment_names=["srch"])


# The search's first points, queued before it starts so that pruning happens on any host: two that learn (~0.8
# after an epoch), then one whose rate (1e-6) leaves it at chance (~0.1), far below their median, so the median
# pruner stops it whatever the CPU's rounding. Trials 3 and 4 are TPE's: pruned or not, nothing below depends on it.
FIRST_POINTS = [
    {"train.lr": 1e-2, "model.dropout": 0.0, "train.schedule": "constant"},
    {"train.lr": 3e-3, "model.dropout": 0.1, "train.schedule": "constant"},
    {"train.lr": 1e-6, "model.dropout": 0.0, "train.schedule": "constant"},
]


def _queue_first_points(study_file, storage: str) -> None:
    study = parse_study(study_file.read_text())
    optuna_study = search.open_study(study.search, storage, search.optuna_name(study), search.trial_epochs(study))
    for point in FIRST_POINTS:
        optuna_study.enqueue_trial(point)


@pytest.mark.slow
def test_search_runs_prunes_confirms_and_resumes(write_study, tmp_path, new_store, capsys):
    store = new_store()
    study = write_study(SEARCH.format(trials=5))
    _queue_first_points(study, str(tmp_path / "optuna-journal.log"))  # the journal beside the store, ablate's default
    assert main(["run", str(study), "--tracking-uri", store, "--max-workers", "1"]) == 0
    runs = _runs(store)
    searched = runs[runs["tags.role"] == "search"]
    assert len(searched) == 5 and sorted(searched["tags.optuna_trial"].astype(int)) == [0, 1, 2, 3, 4]
    assert searched["metrics.test_accuracy"].isna().all()  # the search never looks at the test set
    pruned = searched[searched["tags.optuna_state"] == "PRUNED"]
    assert "2" in set(pruned["tags.optuna_trial"]) and (pruned["metrics.pruned_at_epoch"] < 3).all()
    assert (pruned["metrics.params_count"] == 784 * 32 + 32 + 32 * 10 + 10).all()  # logged by a pruned run too
    confirmed = runs[runs["tags.role"] == "trial"]
    assert len(confirmed) == 4 and set(confirmed["tags.seed"]) == {"10", "11"}
    assert confirmed["tags.stage"].str.startswith("top").all()

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna-journal.log"))
    )
    loaded = optuna.load_study(
        study_name=_optuna_name(5), storage=storage
    )  # the storage ablate wrote, opened by Optuna itself
    assert len(loaded.trials) == 5
    assert loaded.metric_names == ["val_accuracy"]  # the study queued above, before ablate's run: described by it
    assert loaded.user_attrs["study_file"] == str(study.resolve()) and loaded.user_attrs["direction"] == "maximize"

    assert main(["run", str(study), "--tracking-uri", store]) == 0  # nothing left to do
    assert len(_runs(store)) == len(runs)
    bigger = write_study(SEARCH.format(trials=7), "more.toml")
    assert main(["run", str(bigger), "--tracking-uri", store]) == 0  # continues up to 7, two workers
    searched = _runs(store).query("`tags.role` == 'search'")
    assert len(searched) == 7 and searched["tags.optuna_trial"].is_unique  # no trial evaluated twice
    assert len(optuna.load_study(study_name=_optuna_name(5), storage=storage).trials) == 7

    out = tmp_path / "report" / "srch.md"
    assert main(["report", "--tracking-uri", store, "--study", "srch", "--out", str(out)]) == 0
    text = out.read_text()
    assert "### Search (val_accuracy)" in text and "Best trials:" in text and "search val_accuracy" in text
    figure = out.parent / "srch-history.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 5000
    assert text.count("(srch-history.png)") == 1  # in the search's section, not again among the others
    printed = capsys.readouterr().out
    assert f"wrote {figure}" in printed  # listed with the other figures, and logged with them:
    client = mlflow.MlflowClient(store)
    parent = client.search_runs([client.get_experiment_by_name("srch").experiment_id], "tags.role = 'parent'",
                                order_by=["attributes.start_time DESC"])[0]
    assert "figures/srch-history.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}


def _journal(path) -> optuna.storages.BaseStorage:
    """The journal as Optuna itself (and optuna-dashboard) opens it, not through ablate."""
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def test_a_new_search_study_names_its_objective_and_origin_for_optuna_dashboard(write_study, tmp_path):
    study_file = write_study(SEARCH.format(trials=4))
    study = parse_study(study_file.read_text(), str(study_file))
    storage = str(tmp_path / "optuna-journal.log")
    search.open_study(study.search, storage, search.optuna_name(study), search.trial_epochs(study),
                      on_create=partial(search.set_up_new, study))  # as `ablate run` creates it
    loaded = optuna.load_study(study_name=search.optuna_name(study), storage=_journal(storage))
    assert loaded.metric_names == ["val_accuracy"]  # optuna-dashboard's "Objective 0" otherwise
    assert loaded.user_attrs == {"study_file": str(study_file.resolve()), "ablate_version": ablate.__version__,
                                 "objective": "val_accuracy", "direction": "maximize"}


def test_describing_writes_only_what_a_study_lacks(write_study, tmp_path):
    """A study an earlier ablate created (no names, perhaps a user attribute of its own) is described on its resume,
    keeping what it holds; described once, describing again writes nothing (every invocation of a run calls it)."""
    study = parse_study(write_study(SEARCH.format(trials=4)).read_text(), str(tmp_path / "study.toml"))
    journal = tmp_path / "optuna-journal.log"
    earlier = optuna.create_study(study_name=search.optuna_name(study), storage=_journal(journal),
                                  direction="maximize")
    earlier.set_user_attr("study_file", "studies/old-name.toml")
    search.describe(earlier, study)
    loaded = optuna.load_study(study_name=search.optuna_name(study), storage=_journal(journal))
    assert loaded.metric_names == ["val_accuracy"] and loaded.direction == optuna.study.StudyDirection.MAXIMIZE
    assert loaded.user_attrs["study_file"] == "studies/old-name.toml"  # kept
    attrs = loaded.user_attrs
    assert attrs["objective"] == "val_accuracy" and attrs["ablate_version"] == ablate.__version__
    size = journal.stat().st_size
    search.describe(loaded, study)
    assert journal.stat().st_size == size  # nothing appended to the journal


DASHBOARD = Path(sys.executable).parent / "optuna-dashboard"


@pytest.mark.slow
@pytest.mark.skipif(not DASHBOARD.exists(), reason="optuna-dashboard is not installed beside Python (optional)")
def test_optuna_dashboard_shows_the_objective_by_name(write_study, tmp_path):
    """optuna-dashboard itself, on the journal of a search study as `ablate run` creates it (one trial told): its API
    — what its web page draws — names the objective val_accuracy (not "Objective 0") and lists the attributes."""
    study_file = write_study(SEARCH.format(trials=4))
    study = parse_study(study_file.read_text(), str(study_file))
    journal = str(tmp_path / "optuna-journal.log")
    created = search.open_study(study.search, journal, search.optuna_name(study), search.trial_epochs(study),
                                on_create=partial(search.set_up_new, study))
    created.tell(created.ask(), 0.9)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(DASHBOARD), journal, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", server)["study_summaries"]
        [summary] = [s for s in studies if s["study_name"] == search.optuna_name(study)]
        assert {"key": "objective", "value": "val_accuracy"} in summary["user_attrs"]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", server)
        assert detail["objective_names"] == ["val_accuracy"] and detail["directions"] == ["maximize"]
        shown = {attr["key"]: attr["value"] for attr in detail["user_attrs"]}
        assert shown["study_file"] == str(study_file.resolve()) and shown["ablate_version"] == ablate.__version__
        assert len(detail["trials"]) == 1
    finally:
        server.terminate()
        server.wait(timeout=30)


def _get_json(url: str, server: subprocess.Popen, wait: float = 60.0) -> dict:
    """GET a JSON answer, waiting for the server to come up (a few seconds)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return json.load(answer)
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"optuna-dashboard ended: {server.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_rdb_storage_url_is_used_as_is(tmp_path):
    """--storage postgresql://… for several machines; an SQLite URL exercises the same RDB path here."""
    spec = parse_study(SEARCH.format(trials=4)).search
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert search.open_storage(url) == url
    study = search.open_study(spec, url, "srch", epochs=3)
    trial = study.ask()
    search.suggest(trial, spec.space)
    study.tell(trial, 0.5)
    assert len(optuna.load_study(study_name="srch", storage=url).trials) == 1
