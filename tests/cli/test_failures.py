"""Broken environments: a bad store, bad data, signals. One message, a documented exit code, nothing half-recorded."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import mlflow
import pytest

from ablate.cli import main
from ablate.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_STORE, EXIT_TERMINATED, StoreError
from tests.conftest import DATA_DIR, REPO, TINY_STUDY

RESUME = r"Resume with: \S*ablate run "  # the command as it runs here (ablate._shell: maybe .venv/bin/ablate)


@pytest.fixture
def tiny(write_study):
    return write_study(TINY_STUDY)


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# -- the store -------------------------------------------------------------------------


def test_a_damaged_store_is_said_so_by_run_and_plan_and_left_untouched(tiny, tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"\x00garbage, not a database" * 100)
    before = db.read_bytes()
    uri = f"sqlite:///{db}"
    for command in (["run", str(tiny)], ["plan", str(tiny)]):
        code, out = _run(capsys, *command, "--tracking-uri", uri)
        assert code == EXIT_STORE and str(db) in out and "not an SQLite database" in out, out
        assert "Traceback" not in out
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "study.toml"]


def test_a_store_that_is_a_folder_or_in_a_missing_folder_is_refused_before_anything_is_made(tiny, tmp_path, capsys):
    (tmp_path / "store").mkdir()
    code, out = _run(capsys, "run", str(tiny), "--tracking-uri", f"sqlite:///{tmp_path / 'store'}")
    assert code == EXIT_STORE and "is a folder" in out
    code, out = _run(capsys, "run", str(tiny), "--tracking-uri", f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}")
    assert code == EXIT_STORE and "does not exist" in out
    assert not (tmp_path / "nowhere").exists() and list((tmp_path / "store").iterdir()) == []


def test_a_read_only_store_is_refused_by_run_but_read_by_plan(tiny, tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    from ablate.tracking import Tracker

    Tracker(uri)  # a complete, empty store
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)  # tests run as root, who may write anyway
    code, out = _run(capsys, "run", str(tiny), "--tracking-uri", uri)
    assert code == EXIT_STORE and "read-only" in out
    assert _run(capsys, "plan", str(tiny), "--tracking-uri", uri)[0] == 0


def test_an_unreachable_tracking_server_is_said_so_in_seconds(tiny, capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    code, out = _run(capsys, "run", str(tiny), "--tracking-uri", f"http://127.0.0.1:{port}")
    assert code == EXIT_STORE and "cannot reach the tracking server" in out and "Traceback" not in out
    assert time.monotonic() - started < 60


def test_an_experiment_of_that_name_that_ablate_did_not_make_stops_the_run_before_training(tiny, store, capsys):
    mlflow.MlflowClient(store).create_experiment("tiny")
    code, out = _run(capsys, "run", str(tiny), "--tracking-uri", store)
    assert code == EXIT_STORE and "ablate did not create" in out
    assert (
        mlflow.MlflowClient(store).search_runs(
            [mlflow.MlflowClient(store).get_experiment_by_name("tiny").experiment_id]
        )
        == []
    )


def test_a_store_that_fails_mid_study_stops_the_run_with_one_message(tiny, store, monkeypatch):
    """A full disk under a worker: the run stops (no worker restarted over and over) with StoreError."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from ablate.console import ConsoleReporter
    from ablate.run import InlineBackend, load, prepare, run_study

    real = MlflowClient.log_batch
    calls = []

    def fills_the_disk(self, run_id, metrics=(), **kwargs):
        calls.append(run_id)
        if metrics and len(calls) > 6:
            raise MlflowException(
                "(sqlite3.OperationalError) database or disk is full", error_code="TEMPORARILY_UNAVAILABLE"
            )
        return real(self, run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", fills_the_disk)
    with pytest.raises(StoreError, match="is full"):
        run_study(prepare(load(tiny), tracking_uri=store, data_dir=DATA_DIR, backend=InlineBackend), ConsoleReporter())


def test_an_error_after_the_parent_run_exists_ends_it_failed(tiny, store, monkeypatch):
    """Nothing half-recorded: a parent run is never left RUNNING by an invocation that crashed."""
    from ablate.console import ConsoleReporter
    from ablate.run import InlineBackend, _study, load, prepare, run_study

    def broken(*args, **kwargs):
        raise OSError(36, "File name too long")

    monkeypatch.setattr(_study, "plan_document", broken)
    with pytest.raises(OSError):
        run_study(prepare(load(tiny), tracking_uri=store, data_dir=DATA_DIR, backend=InlineBackend), ConsoleReporter())
    parents = mlflow.MlflowClient(store).search_runs(["1"], "tags.role = 'parent'")
    assert [p.info.status for p in parents] == ["FAILED"]


def test_a_folder_whose_path_means_something_in_a_uri_holds_its_own_store(tmp_path, monkeypatch):
    from ablate.tracking import Tracker, default_uri, sqlite_path

    folder = tmp_path / "runs?v=1#draft %41"
    folder.mkdir()
    monkeypatch.chdir(folder)
    uri = default_uri()
    Tracker(uri).experiment("tiny")
    assert (folder / "mlflow.db").exists() and sqlite_path(uri).resolve() == folder / "mlflow.db"
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # nothing made beside it


# -- the data --------------------------------------------------------------------------


def _data_copy(tmp_path, truncate: str | None = None):
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR / "MNIST", data / "MNIST")
    if truncate:
        path = data / "MNIST" / "raw" / truncate
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return data


def test_a_truncated_data_file_is_one_error_naming_it_before_anything_is_recorded(tiny, tmp_path, capsys):
    data = _data_copy(tmp_path, truncate="train-images-idx3-ubyte.gz")
    code, out = _run(
        capsys, "run", str(tiny), "--data-dir", str(data), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    assert code == EXIT_BAD_INPUT and "train-images-idx3-ubyte.gz is damaged" in out and "Traceback" not in out
    assert not (tmp_path / "mlflow.db").exists()


def test_an_idx_file_shorter_than_its_header_says_is_damaged(tmp_path):
    import shutil

    from ablate import datasets
    from ablate.errors import AblateError

    shutil.copytree(DATA_DIR / "MNIST", tmp_path / "MNIST")
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.open(path).read()[:-10]))
    with pytest.raises(AblateError, match="header promises"):
        datasets.read_arrays("mnist", tmp_path, download=False)


def test_a_missing_data_folder_leaves_no_store_and_no_empty_folders(tiny, tmp_path, capsys, monkeypatch, swap_dataset):
    import dataclasses

    from ablate import datasets

    def no_network(root):  # what torchvision does here, after making its folders
        (root / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise OSError("no network")

    swap_dataset(dataclasses.replace(datasets.get("mnist"), download=no_network))
    monkeypatch.chdir(tmp_path)
    code, out = _run(capsys, "run", str(tiny), "--data-dir", str(tmp_path / "data"))
    assert code == EXIT_BAD_INPUT and str(tmp_path / "data" / "MNIST" / "raw") in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


def test_a_missing_gpu_is_said_before_the_store_is_made(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = _run(capsys, "run", str(tiny), "--devices", "0")
    assert code == EXIT_BAD_INPUT and "no GPU 0" in out and not (tmp_path / "mlflow.db").exists()


# -- the command line ------------------------------------------------------------------


def test_run_says_which_store_and_data_it_uses_and_that_the_store_is_new(tiny, tmp_path, capsys, monkeypatch):
    from ablate.tracking import Tracker

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Tracker, "__init__", interrupted)
    code, out = _run(capsys, "run", str(tiny))  # stopped right after the header, before the store is opened
    assert code == EXIT_INTERRUPTED
    assert f"store {tmp_path / 'mlflow.db'} (new: this run creates it)" in out and f"data  {DATA_DIR}" in out
    assert not (tmp_path / "mlflow.db").exists()


def test_plan_says_which_store_it_looked_at_even_when_there_is_none(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = _run(capsys, "plan", str(tiny))
    assert code == 0 and f"No store at {tmp_path / 'mlflow.db'} yet" in out.replace("\n", " ")
    assert not (tmp_path / "mlflow.db").exists()


def test_debug_works_after_the_command_too(tiny, tmp_path, capsys):
    code, out = _run(capsys, "plan", str(tiny), "--debug", "--tracking-uri", f"sqlite:///{tmp_path / 'x'}")
    assert code == 0


# -- signals ---------------------------------------------------------------------------


def _start(study, store, **env):
    environment = {**os.environ, "ABLATE_DATA_DIR": str(DATA_DIR), **env}
    return subprocess.Popen(
        [sys.executable, "-m", "ablate", "run", str(study), "--tracking-uri", store],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _runs(store):
    mlflow.set_tracking_uri(store)
    try:
        return mlflow.search_runs(experiment_names=["tiny"])
    except Exception:  # noqa: BLE001 — not there yet
        return None


def _wait_for_running_mlp(store, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _runs(store)
        if runs is not None and len(runs) and ((runs["status"] == "RUNNING") & (runs.get("tags.stage") == "mlp")).any():
            return
        time.sleep(0.3)
    raise AssertionError("the slow trial never started")


@pytest.mark.slow
def test_sigterm_ends_the_running_trials_preempted_and_exits_143(tiny, store):
    parent = _start(tiny, store, ABLATE_TEST_FAULTS='{"mlp:0": "slow"}', ABLATE_TEST_SLOW_SECONDS="60")
    _wait_for_running_mlp(store)
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=60)
    assert parent.returncode == EXIT_TERMINATED, out
    assert re.search(RESUME, out) and "Traceback" not in out
    assert f"store {store.removeprefix('sqlite:///')}" in out and f"data  {DATA_DIR}" in out  # absolute paths
    runs = _runs(store)
    killed = runs[runs["status"] == "KILLED"]
    assert set(killed["tags.reason"]) == {"preempted"} and set(killed["tags.role"]) == {"parent", "trial"}
    assert "RUNNING" not in set(runs["status"])


@pytest.mark.slow
def test_two_ctrl_c_in_a_row_still_close_every_run_and_print_the_resume_hint(tiny, store):
    parent = _start(tiny, store, ABLATE_TEST_FAULTS='{"mlp:0": "slow"}', ABLATE_TEST_SLOW_SECONDS="60")
    _wait_for_running_mlp(store)
    parent.send_signal(signal.SIGINT)
    time.sleep(0.05)
    parent.send_signal(signal.SIGINT)
    out, _ = parent.communicate(timeout=60)
    assert parent.returncode == EXIT_INTERRUPTED, out
    assert re.search(RESUME, out) and "Traceback" not in out
    runs = _runs(store)
    assert "RUNNING" not in set(runs["status"]), runs[["status", "tags.role"]]
    assert set(runs.loc[runs["tags.role"] == "parent", "status"]) == {"KILLED"}


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in this process, as in a terminal (a shell starts a background job with Ctrl-C
    ignored, and Python then leaves it so)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_inside_a_store_query_lands_after_it_and_leaves_the_store_writable(store, ctrl_c_raises):
    """Ctrl-C right after a query's statement ran, before its rows were read. Cut there, the statement stayed open
    (the exception's traceback holds it) and SQLite kept the whole file locked: recording the interruption, from this
    process or another, failed with "database is locked" after 20 s, and the runs stayed RUNNING."""
    import sqlalchemy

    from ablate.tracking import Tracker

    tracker = Tracker(store)
    run_id = tracker.client.create_run(tracker.experiment("tiny")).info.run_id
    engine = tracker.client._client._tracking_client.store.engine
    pressed = []

    def press_ctrl_c(conn, cursor, statement, *args) -> None:
        if not pressed and statement.lstrip().upper().startswith("SELECT"):
            pressed.append(statement)
            os.kill(os.getpid(), signal.SIGINT)

    sqlalchemy.event.listen(engine, "after_cursor_execute", press_ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt) as interrupted:
            tracker.run_state(run_id)
    finally:
        sqlalchemy.event.remove(engine, "after_cursor_execute", press_ctrl_c)
    assert pressed and interrupted.value is not None  # still alive, as while a worker records its interruption
    started = time.monotonic()
    Tracker(store).finish(run_id, "KILLED")  # another process's client
    tracker.finish(run_id, "KILLED", reason="interrupted")
    assert time.monotonic() - started < 5 and tracker.run_state(run_id).status == "KILLED"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_while_a_claim_makes_its_run_leaves_no_run_behind(tiny, store, monkeypatch, ctrl_c_raises):
    """Ctrl-C between the claim's run being created and its parameters logged: the run is withdrawn, not left
    RUNNING under a name nobody heard of."""
    from mlflow.tracking import MlflowClient

    from ablate.design import expand
    from ablate.spec import load_study
    from ablate.tracking import Tracker

    tracker = Tracker(store)
    experiment = tracker.experiment("tiny")
    parent = tracker.client.create_run(experiment).info.run_id
    trial = expand(load_study(tiny))[0]
    real = MlflowClient.log_batch

    def ctrl_c_on_params(self, run_id, *args, params=(), **kwargs):
        if params:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, run_id, *args, params=params, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", ctrl_c_on_params)
    with pytest.raises(KeyboardInterrupt):
        tracker.claim_trial(experiment, parent, trial, {})
    monkeypatch.setattr(MlflowClient, "log_batch", real)
    assert tracker.search(experiment, f"tags.trial_hash = '{trial.hash}'") == []
    assert tracker.claim_trial(experiment, parent, trial, {}).run_id is not None  # nothing stands in its way


def test_an_interrupted_run_ends_killed_the_trial_runs_no_one_heard_of(tiny, store):
    """Ctrl-C landed in a worker just after it made a trial's run, before it said so: neither the worker nor the
    dispatcher could end that run. Once the workers are gone, the invocation ends its own runs still RUNNING KILLED,
    and nothing else: a FINISHED run stays FINISHED, another invocation's RUNNING run stays RUNNING."""
    from ablate.console import ConsoleReporter
    from ablate.design import expand
    from ablate.run import (
        Done,
        Finished,
        InlineBackend,
        Loaded,
        Outcome,
        Started,
        prepare,
        run_study,
        task_key,
        task_trials,
    )
    from ablate.spec import load_study
    from ablate.tracking import Tracker

    study = load_study(tiny)
    trials = expand(study)
    tracker = Tracker(store)
    elsewhere = []

    def backend(slots, config):
        def execute(slot, task, emit) -> None:
            trial = task_trials(task)[0]
            if not elsewhere:  # made while this invocation runs (one made before would be recovered at its start)
                elsewhere.append(tracker.start_trial(config.experiment_id, "another-invocation", trials[3], {}))
            run_id = tracker.start_trial(config.experiment_id, config.parent_run_id, trial, {})
            if trial is trials[1]:
                raise KeyboardInterrupt()  # before Started: the dispatcher never hears of run_id
            emit(Started(slot.index, task_key(task), trial, run_id))
            tracker.finish(run_id, "FINISHED")
            emit(Finished(slot.index, task_key(task), trial.hash, Outcome(test_accuracy=0.5, train_seconds=1.0)))
            emit(Done(slot.index, task_key(task)))

        return InlineBackend(slots, execute=execute)

    summary = run_study(
        prepare(Loaded(study, trials[:2]), tracking_uri=store, data_dir=DATA_DIR, backend=backend), ConsoleReporter()
    )
    assert summary.interrupted
    runs = _runs(store).set_index("run_id")
    by_trial = {
        f"{row['tags.stage']}:{row['tags.seed']}": row for _, row in runs.iterrows() if row["tags.role"] == "trial"
    }
    assert by_trial["linear:0"]["status"] == "FINISHED"
    assert (by_trial["linear:1"]["status"], by_trial["linear:1"]["tags.reason"]) == ("KILLED", "interrupted")
    assert runs.loc[elsewhere[0], "status"] == "RUNNING"
    assert list(runs.loc[runs["tags.role"] == "parent", "status"]) == ["KILLED"]


@pytest.mark.slow
def test_ctrl_c_while_the_workers_start_prints_no_traceback(tiny, store):
    parent = subprocess.Popen(
        [sys.executable, "-m", "ablate", "run", str(tiny), "--tracking-uri", store],
        cwd=REPO,
        env={**os.environ, "ABLATE_DATA_DIR": str(DATA_DIR)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (_runs(store) is not None and len(_runs(store))):
        time.sleep(0.05)  # the parent run exists: the workers are starting
    os.killpg(parent.pid, signal.SIGINT)  # as a terminal sends it: to every process of the group
    out, _ = parent.communicate(timeout=60)
    assert parent.returncode == EXIT_INTERRUPTED, out
    assert "Traceback" not in out, out


@pytest.mark.slow
def test_a_report_of_a_study_whose_trials_all_failed_is_written_without_metric_figures(
    tiny, store, tmp_path, capsys, monkeypatch
):
    faults = {f"{stage}:{seed}": "raise" for stage in ("linear", "mlp") for seed in (0, 1)}
    monkeypatch.setenv("ABLATE_TEST_FAULTS", __import__("json").dumps(faults))
    assert main(["run", str(tiny), "--tracking-uri", store]) == 1
    capsys.readouterr()
    out = tmp_path / "results" / "tiny.md"
    code, printed = _run(capsys, "report", "--study", "tiny", "--out", str(out), "--tracking-uri", store)
    assert code == 0 and "Traceback" not in printed, printed  # before: ValueError: Axis limits cannot be NaN or Inf
    assert "0 of 4 planned trials finished" in out.read_text()
    assert [p.name for p in out.parent.glob("*.png")] == ["tiny-samples.png"]  # the data, and no metric to draw


def test_report_without_a_store_and_a_missing_gpu_are_said_before_mlflow_loads(tiny, tmp_path):
    probe = (
        "import sys; from ablate.cli import main; code = main(sys.argv[1:]); "
        "print('mlflow loaded' if 'mlflow' in sys.modules else 'mlflow not loaded', code)"
    )
    for args in (["report"], ["run", str(tiny), "--devices", "0"]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "ABLATE_DATA_DIR": str(DATA_DIR)},
            timeout=120,
        )
        assert done.stdout.split()[-3:] == ["mlflow", "not", "loaded"] or "mlflow not loaded 2" in done.stdout, (
            args,
            done.stdout,
            done.stderr,
        )
        assert "mlflow not loaded 2" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


@pytest.mark.parametrize("exits_after", [False, True])
def test_once_interrupted_the_ablate_process_ignores_later_signals_to_its_exit(exits_after, ctrl_c_raises):
    """A second Ctrl-C that lands after the interruption was recorded, while the interpreter shuts down, used to
    print a KeyboardInterrupt traceback from an exit hook or kill the process by SIGINT (exit -2, not 130). The
    `ablate` process ignores signals once interrupted; a caller in-process gets its handlers back."""
    from ablate.run import Interrupted, interruptible

    previous_term = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Interrupted), interruptible(exits_after=exits_after):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        expected = signal.SIG_IGN if exits_after else signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is expected
        assert signal.getsignal(signal.SIGTERM) is (signal.SIG_IGN if exits_after else previous_term)
    finally:
        signal.signal(signal.SIGTERM, previous_term)


def test_sigterm_turned_into_a_plain_keyboard_interrupt_by_library_code_still_reads_as_preempted(ctrl_c_raises):
    """Ray's ray.wait runs our handler in native code and raises a KeyboardInterrupt of its own: the SIGTERM behind
    it must still end the runs `preempted` and exit 143, not `interrupted` and 130."""
    from ablate.run import Interrupted, as_interrupted, interruptible

    previous_term = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Interrupted) as stopped, interruptible():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
            except KeyboardInterrupt:
                assert as_interrupted(KeyboardInterrupt()).reason == "preempted"  # what the dispatcher records
                raise KeyboardInterrupt() from None  # what the library raises instead of ours
        assert (stopped.value.reason, stopped.value.exit_code) == ("preempted", 143)
    finally:
        signal.signal(signal.SIGTERM, previous_term)


def test_the_ray_backend_without_ray_installed_is_one_message_and_no_store(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as where `pip install "ablate[ray]"` was not run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out = _run(capsys, "run", str(tiny), "--backend", "ray", "--tracking-uri", uri)
    assert code == 2 and 'pip install "ablate[ray]"' in out and "Traceback" not in out, out
    assert not (tmp_path / "mlflow.db").exists()


def test_a_ray_head_that_does_not_answer_is_one_message_in_seconds_and_no_store(tiny, tmp_path, capsys):
    pytest.importorskip("ray")
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    started = time.monotonic()
    code, out = _run(
        capsys, "run", str(tiny), "--backend", "ray", "--address", f"127.0.0.1:{port}", "--tracking-uri", uri
    )
    assert code == 2 and f"no Ray cluster at 127.0.0.1:{port}" in out and "Traceback" not in out, out
    assert time.monotonic() - started < 30 and not (tmp_path / "mlflow.db").exists()
