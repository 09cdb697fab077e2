"""Parallel workers: device assignment, parallel = serial, failures, dead workers, Ctrl-C, kill -9 and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest

from ablate.cli import main
from ablate.errors import AblateError
from ablate.run import Slot, plan_slots
from tests.conftest import DATA_DIR, REPO, TINY_STUDY

RESUME = r"Resume with: \S*ablate run "  # the command as it runs here (ablate._shell: maybe .venv/bin/ablate)

# ---------------------------------------------------------------------------- device assignment (no GPU needed)


def test_auto_without_gpu_is_one_single_threaded_cpu_worker_per_core():
    assert plan_slots("auto", None, None, cuda_count=0, cpu_cores=4) == [Slot(i, "cpu", 1) for i in range(4)]
    assert plan_slots("cpu", 3, None, cuda_count=2, cpu_cores=16) == [Slot(i, "cpu", 1) for i in range(3)]


def test_auto_uses_every_gpu_round_robin_and_shares_the_cores():
    slots = plan_slots("auto", 2, None, cuda_count=4, cpu_cores=16)
    assert [s.device for s in slots] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"] * 2
    assert {s.threads for s in slots} == {2}  # 8 workers × 2 threads = 16 cores
    limited = plan_slots("auto", 2, 3, cuda_count=4, cpu_cores=16)
    assert [s.device for s in limited] == ["cuda:0", "cuda:1", "cuda:2"]  # max_workers spreads, not piles up


def test_listed_gpus_and_missing_ones():
    assert [s.device for s in plan_slots((0, 2), None, None, cuda_count=3, cpu_cores=8)] == ["cuda:0", "cuda:2"]
    with pytest.raises(AblateError, match=r"there is no GPU 2 here \(2 visible\)"):
        plan_slots((0, 2), None, None, cuda_count=2, cpu_cores=8)
    with pytest.raises(AblateError, match="none visible"):
        plan_slots((0,), None, None, cuda_count=0, cpu_cores=8)


# ---------------------------------------------------------------------------- end to end


@pytest.fixture
def tiny(write_study):
    return write_study(TINY_STUDY)


def _trials(store: str, experiment: str = "tiny") -> pd.DataFrame:
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=[experiment])
    return runs[runs["tags.role"] == "trial"]


@pytest.mark.slow
def test_parallel_equals_serial(tiny, tmp_path, capsys):
    serial, parallel = f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'three.db'}"
    assert main(["run", str(tiny), "--tracking-uri", serial, "--devices", "cpu", "--max-workers", "1"]) == 0
    assert main(["run", str(tiny), "--tracking-uri", parallel, "--devices", "cpu", "--workers-per-device", "3"]) == 0
    assert "on 3 worker(s)" in capsys.readouterr().out
    columns = ["metrics.test_accuracy", "metrics.test_loss", "metrics.val_accuracy", "metrics.val_loss"]
    one = _trials(serial).set_index("tags.trial_hash")[columns].sort_index()
    three = _trials(parallel).set_index("tags.trial_hash")[columns].sort_index()
    assert len(one) == 4 and one.equals(three)
    assert _trials(parallel)["tags.worker"].nunique() > 1  # the work really was shared out


@pytest.mark.slow
def test_injected_failures_are_recorded_with_their_reason(tiny, store, capsys, monkeypatch):
    faults = {"linear:1": "nan", "mlp:0": "oom", "mlp:1": "kill"}
    monkeypatch.setenv("ABLATE_TEST_FAULTS", json.dumps(faults))
    assert main(["run", str(tiny), "--tracking-uri", store, "--workers-per-device", "2"]) == 1
    out = capsys.readouterr().out
    for reason in ("diverged", "oom", "worker-lost"):
        assert f"FAILED ({reason})" in out
    trials = _trials(store).set_index(["tags.stage", "tags.seed"])
    assert trials.loc[("linear", "0"), "status"] == "FINISHED"  # the good trial still ran
    assert trials.loc[("linear", "1"), "tags.reason"] == "diverged"
    assert trials.loc[("mlp", "0"), "tags.reason"] == "oom"
    assert (
        trials.loc[("mlp", "1"), "tags.reason"] == "worker-lost"
        and "exit code -9" in trials.loc[("mlp", "1"), "tags.error"]
    )
    assert set(trials["status"]) == {"FINISHED", "FAILED"}

    monkeypatch.delenv("ABLATE_TEST_FAULTS")
    assert main(["run", str(tiny), "--tracking-uri", store]) == 0  # the failed ones run again, once
    finished = _trials(store).query("status == 'FINISHED'")
    assert len(finished) == 4 and finished["tags.trial_hash"].is_unique


@pytest.mark.slow
def test_a_dead_worker_is_replaced_and_the_rest_still_run(write_study, store, capsys, monkeypatch):
    study = write_study(TINY_STUDY.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    monkeypatch.setenv("ABLATE_TEST_FAULTS", '{"linear:0": "kill"}')
    assert main(["run", str(study), "--tracking-uri", store, "--max-workers", "1"]) == 1
    trials = _trials(store)
    assert (trials["status"] == "FINISHED").sum() == 5  # one worker: it had to be replaced to run these
    assert list(trials.loc[trials["status"] == "FAILED", "tags.reason"]) == ["worker-lost"]


@pytest.mark.slow
def test_a_worker_killed_while_writing_an_event_silences_no_one(tiny, store):
    """A worker can die halfway through a message; the parent and the other workers must carry on."""
    parent = _start(tiny, store, "--workers-per-device", "2", ABLATE_TEST_FAULTS='{"linear:0": "kill-mid-event"}')
    try:
        output, _ = parent.communicate(timeout=180)
    finally:
        parent.kill()
    assert parent.returncode == 1, output
    trials = _trials(store)
    assert (trials["status"] == "FINISHED").sum() == 3
    assert list(trials.loc[trials["status"] == "FAILED", "tags.reason"]) == ["worker-lost"]


@pytest.mark.slow
def test_eight_workers_on_a_fresh_sqlite_store(write_study, tmp_path, capsys):
    study = write_study(
        TINY_STUDY.replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3]").replace("epochs = 2", "epochs = 1")
    )
    store = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert main(["run", str(study), "--tracking-uri", store, "--devices", "cpu", "--workers-per-device", "8"]) == 0
    out = capsys.readouterr().out
    assert "on 8 worker(s)" in out and "locked" not in out
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["tiny"])
    assert len(runs) == 9 and set(runs["status"]) == {"FINISHED"}
    trials = runs[runs["tags.role"] == "trial"]
    assert trials["metrics.test_accuracy"].notna().all() and trials["tags.worker"].nunique() >= 2


def _start(study, store, *options: str, **env) -> subprocess.Popen:
    environment = {**os.environ, "ABLATE_DATA_DIR": str(DATA_DIR), **env}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ablate",
            "run",
            str(study),
            "--tracking-uri",
            store,
            *(options or ("--max-workers", "1")),
        ],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(store: str, condition, timeout: float = 120) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            trials = _trials(store)
            if condition(trials):
                return trials
        except Exception:  # the store or the experiment is not there yet
            pass
        time.sleep(0.5)
    raise AssertionError("timed out waiting for the store")


def _slow_linear_running(trials: pd.DataFrame) -> bool:
    """The MLP's two trials done (the costlier, handed out first: longest first), the slow linear one running."""
    done = (trials["status"] == "FINISHED").sum()
    running = trials[(trials["status"] == "RUNNING") & (trials["tags.stage"] == "linear")]
    return done == 2 and len(running) == 1


@pytest.mark.slow
def test_kill_9_of_the_parent_then_resume_runs_each_trial_once(tiny, store):
    parent = _start(tiny, store, ABLATE_TEST_FAULTS='{"linear:0": "slow"}', ABLATE_TEST_SLOW_SECONDS="30")
    trials = _wait_for(store, _slow_linear_running)
    worker_pid = int(trials.loc[trials["status"] == "RUNNING", "tags.pid"].iloc[0])
    parent.kill()  # SIGKILL: no cleanup at all
    parent.wait()
    os.kill(worker_pid, signal.SIGKILL)  # the orphaned worker would notice on its own; do not wait for it

    assert main(["run", str(tiny), "--tracking-uri", store]) == 0  # resume
    trials = _trials(store)
    per_hash = trials.groupby("tags.trial_hash")["status"].apply(sorted)
    assert len(per_hash) == 4
    assert all(statuses.count("FINISHED") == 1 for statuses in per_hash)  # finished trials never ran twice
    interrupted = trials[trials["status"] == "FAILED"]
    assert len(interrupted) == 1 and interrupted["tags.reason"].iloc[0] == "interrupted"
    assert len(trials) == 5  # 4 trials + the one the kill cut short, run again exactly once
    mlflow.set_tracking_uri(store)
    parents = mlflow.search_runs(experiment_names=["tiny"]).query("`tags.role` == 'parent'")
    assert sorted(parents["status"]) == ["FAILED", "FINISHED"]  # the killed invocation is closed too


@pytest.mark.slow
def test_sigint_kills_running_trials_and_exits_130(tiny, store):
    parent = _start(tiny, store, ABLATE_TEST_FAULTS='{"linear:0": "slow"}', ABLATE_TEST_SLOW_SECONDS="60")
    _wait_for(store, _slow_linear_running)
    parent.send_signal(signal.SIGINT)  # to the parent alone: it passes it on to its workers
    out, _ = parent.communicate(timeout=60)
    assert parent.returncode == 130, out
    assert re.search(RESUME, out)
    trials = _trials(store)
    assert sorted(trials["status"]) == ["FINISHED", "FINISHED", "KILLED"]
    mlflow.set_tracking_uri(store)
    parents = mlflow.search_runs(experiment_names=["tiny"]).query("`tags.role` == 'parent'")
    assert list(parents["status"]) == ["KILLED"]


@pytest.mark.slow
def test_plan_shows_each_trials_status_in_the_store(tiny, store, capsys, monkeypatch):
    monkeypatch.setenv("ABLATE_TEST_FAULTS", '{"mlp:1": "raise"}')
    assert main(["run", str(tiny), "--tracking-uri", store]) == 1
    capsys.readouterr()
    grown = tiny.parent / "grown.toml"
    grown.write_text(
        tiny.read_text() + '\n[[stage]]\nname = "bn"\nmodel = { kind = "mlp", hidden = [32], batchnorm = true }\n'
    )
    assert main(["plan", str(grown), "--tracking-uri", store, "--format", "json"]) == 0
    statuses = {(t["stage"], t["seed"]): t["status"] for t in json.loads(capsys.readouterr().out)["trials"]}
    assert statuses == {
        ("linear", 0): "done",
        ("linear", 1): "done",
        ("mlp", 0): "done",
        ("mlp", 1): "failed",
        ("bn", 0): "to do",
        ("bn", 1): "to do",
    }
    assert main(["plan", str(grown), "--tracking-uri", store]) == 0
    assert "3 done, 1 failed, 2 to do" in capsys.readouterr().out
