"""`--backend ray` against real components on this machine: a PostgreSQL server, an MLflow tracking server on it
(artifacts proxied), and a Ray cluster of a head and two worker nodes — every `ablate run` a real process, as a
user runs it. The head has no CPU for workers, so every actor runs on a worker node and killing one is a lost node,
not a lost cluster.

Skipped, with the reason, only where Ray, psycopg or PostgreSQL's binaries are absent (tests/_cluster.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import _cluster
from tests.conftest import TINY_STUDY

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.long]  # minutes: the default run leaves it out

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = REPO / "data"
EXIT_TERMINATED = 143
EXIT_FAILED_TRIALS = 1


def grid(name: str, seeds: str) -> str:
    """The tiny two-stage study of the other tests, under its own name and seeds."""
    return TINY_STUDY.replace('name = "tiny"', f'name = "{name}"').replace("seeds = [0, 1]", f"seeds = {seeds}")


SEARCH = """
[study]
name = "{name}"
design = "search"
seeds = [0]

[data]
val_size = 500
train_limit = 1000
test_limit = 500

[model]
kind = "mlp"
hidden = [32]

[train]
epochs = 2
batch_size = 128

[search]
trials = 3
startup_trials = 2
warmup_epochs = 0
confirm_top = 1
confirm_seeds = [10]

[search.space]
"train.lr" = {{ low = 1e-3, high = 0.3, log = true }}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = _cluster.skip_unless_cluster_components()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("cluster")
    with (
        _cluster.postgres_server(root) as pg,
        _cluster.mlflow_server(pg.url("mlflow"), root / "artifacts", log_path=root / "mlflow.log") as tracking,
        _cluster.ray_cluster(root, worker_nodes=2, cpus_per_node=1, head_cpus=0) as ray,
    ):
        yield _Cluster(pg, str(tracking), ray, root)


class _Cluster:
    def __init__(self, pg, tracking: str, ray, root: Path):
        self.pg, self.tracking, self.ray, self.root = pg, tracking, ray, root

    def study(self, text: str, name: str) -> Path:
        path = self.root / f"{name}.toml"
        path.write_text(text)
        return path

    def argv(self, study: Path, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "ablate",
            "run",
            str(study),
            "--backend",
            "ray",
            "--address",
            self.ray.address,
            "--tracking-uri",
            self.tracking,
            "--claims",
            self.pg.url("mlflow"),
            *extra,
        ]  # the server's database

    def start(self, study: Path, *extra: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(study, *extra),
            cwd=REPO,
            env={**os.environ, "ABLATE_DATA_DIR": str(DATA_DIR), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, study: Path, *extra: str, timeout: float = 240, **env: str) -> tuple[int, str]:
        process = self.start(study, *extra, **env)
        out, _ = process.communicate(timeout=timeout)
        return process.returncode, out

    def runs(self, name: str):
        import mlflow

        client = mlflow.MlflowClient(self.tracking)
        experiment = client.get_experiment_by_name(name)
        return [] if experiment is None else client.search_runs([experiment.experiment_id], max_results=1000)

    def trial_runs(self, name: str):
        return [r for r in self.runs(name) if r.data.tags.get("role") == "trial"]

    def wait_running(self, name: str, stage: str, seed: int = 0, timeout: float = 120):
        """The run of trial `stage` seed `seed` once it is RUNNING (the slow one of the faults: another trial of the
        stage may be RUNNING for a moment and be done by the time the test acts on it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [
                r
                for r in self.trial_runs(name)
                if r.info.status == "RUNNING"
                and r.data.tags.get("stage") == stage
                and r.data.tags.get("seed") == str(seed)
            ]
            if running:
                return running[0]
            time.sleep(0.5)
        raise AssertionError(f"trial {stage} seed {seed} of {name} did not start in {timeout} s")


def _finished_per_hash(runs) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        if run.data.tags.get("role") == "trial":
            counts.setdefault(run.data.tags["trial_hash"], 0)
            counts[run.data.tags["trial_hash"]] += run.info.status == "FINISHED"
    return counts


def _accuracies(runs) -> dict[str, float]:
    return {
        r.data.tags["trial_hash"]: r.data.metrics["test_accuracy"]
        for r in runs
        if r.data.tags.get("role") == "trial" and r.info.status == "FINISHED"
    }


def test_a_grid_runs_across_the_nodes_once_per_trial_with_the_local_backends_accuracies(cluster, tmp_path):
    study = cluster.study(grid("grid", "[0, 1, 2]"), "grid")
    code, out = cluster.run(study)
    assert code == 0, out
    runs = cluster.runs("grid")
    assert set(_finished_per_hash(runs).values()) == {1} and len(_finished_per_hash(runs)) == 6, out
    nodes = {r.data.tags.get("ray_node") for r in runs if r.data.tags.get("role") == "trial"}
    workers = {n.node_id for n in cluster.ray.nodes[1:]}
    assert nodes == workers, (nodes, workers)  # both worker nodes trained, the head none

    local = subprocess.run(
        [sys.executable, "-m", "ablate", "run", str(study), "--tracking-uri", f"sqlite:///{tmp_path / 'local.db'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "ABLATE_DATA_DIR": str(DATA_DIR)},
        timeout=240,
    )
    assert local.returncode == 0, local.stdout + local.stderr
    import mlflow

    local_runs = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'local.db'}").search_runs(
        [mlflow.MlflowClient(f"sqlite:///{tmp_path / 'local.db'}").get_experiment_by_name("grid").experiment_id]
    )
    assert _accuracies(runs) == _accuracies(local_runs)  # one thread per CPU worker: the same numbers, bit for bit

    code, out = cluster.run(study)
    assert code == 0 and "All 6 trials already done" in out, out


def test_a_search_keeps_its_optuna_study_in_postgresql(cluster):
    import optuna

    study = cluster.study(SEARCH.format(name="search"), "search")
    code, out = cluster.run(study, "--storage", cluster.pg.url("optuna"))
    assert code == 0, out
    stored = optuna.get_all_study_summaries(storage=cluster.pg.url("optuna"))
    assert [s.n_trials for s in stored if s.study_name.startswith("search")] == [3]
    runs = cluster.runs("search")
    assert sum(r.data.tags.get("role") == "search" and r.info.status == "FINISHED" for r in runs) == 3
    assert set(_finished_per_hash(runs).values()) == {1} and len(_finished_per_hash(runs)) == 1  # the confirm run
    with cluster.pg.connect("optuna") as connection:  # in PostgreSQL itself, as Optuna wrote them
        assert connection.execute("select count(*) from trials").fetchone()[0] == 3


def test_a_claims_file_on_the_drivers_machine_alone_is_refused_on_a_cluster(cluster):
    """Without --claims (and no database --storage), a server store's claims would be a file of this machine: the
    other nodes' workers would claim trials on their own. Refused before anything is recorded."""
    study = cluster.study(grid("unclaimed", "[0]"), "unclaimed")
    argv = cluster.argv(study)
    del argv[argv.index("--claims") : argv.index("--claims") + 2]
    done = subprocess.run(
        argv,
        cwd=REPO,
        env={**os.environ, "ABLATE_DATA_DIR": str(DATA_DIR)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--claims postgresql://" in done.stderr and "Traceback" not in done.stderr, done
    assert cluster.runs("unclaimed") == []


def test_sigterm_to_the_driver_ends_the_running_trials_preempted_and_the_same_command_resumes(cluster):
    study = cluster.study(grid("preempt", "[0, 1]"), "preempt")
    driver = cluster.start(study, ABLATE_TEST_FAULTS='{"mlp:0": "slow"}', ABLATE_TEST_SLOW_SECONDS="60")
    cluster.wait_running("preempt", "mlp")
    driver.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == EXIT_TERMINATED and "Traceback" not in out, out
    runs = cluster.runs("preempt")
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert {r.data.tags.get("reason") for r in killed} == {"preempted"}
    assert {r.data.tags.get("role") for r in killed} == {"parent", "trial"}
    assert "RUNNING" not in {r.info.status for r in runs}
    code, out = cluster.run(study)
    assert code == 0, out
    assert set(_finished_per_hash(cluster.runs("preempt")).values()) == {1}


def test_two_drivers_started_together_train_each_trial_once(cluster):
    study = cluster.study(grid("twice", "[0, 1, 2]"), "twice")
    first, second = (cluster.start(study, "--max-workers", "1") for _ in range(2))
    outs = [p.communicate(timeout=240)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    assert _finished_per_hash(cluster.runs("twice")) == {h: 1 for h in _finished_per_hash(cluster.runs("twice"))}
    assert len(_finished_per_hash(cluster.runs("twice"))) == 6


def test_a_driver_killed_with_minus_9_is_recovered_by_the_next_run(cluster):
    study = cluster.study(grid("killed", "[0, 1]"), "killed")
    driver = cluster.start(study, ABLATE_TEST_FAULTS='{"mlp:0": "slow"}', ABLATE_TEST_SLOW_SECONDS="60")
    running = cluster.wait_running("killed", "mlp")
    driver.kill()
    driver.communicate(timeout=30)
    actor = int(running.data.tags["pid"])
    deadline = time.monotonic() + 60  # Ray ends a dead driver's actors
    while _cluster._alive(actor) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _cluster._alive(actor)
    code, out = cluster.run(study)
    assert code == 0 and "Recovered" in out, out
    counts = _finished_per_hash(cluster.runs("killed"))
    assert set(counts.values()) == {1} and len(counts) == 4


def test_an_actor_that_dies_is_replaced_and_its_trial_tried_again_then_failed(cluster):
    """The actor's process dies in every attempt at mlp seed 0 (a kill -9 as it ends its first epoch): each death
    is one FAILED worker-lost run, a fresh actor takes the slot, and after the retries the trial stays FAILED."""
    study = cluster.study(grid("dies", "[0]"), "dies")
    code, out = cluster.run(study, ABLATE_TEST_FAULTS='{"mlp:0": "kill"}')
    assert code == EXIT_FAILED_TRIALS and out.count("training it again") == 2, out
    runs = cluster.trial_runs("dies")
    mlp = [(r.info.status, r.data.tags.get("reason")) for r in runs if r.data.tags.get("stage") == "mlp"]
    assert mlp == [("FAILED", "worker-lost")] * 3
    assert [r.info.status for r in runs if r.data.tags.get("stage") == "linear"] == ["FINISHED"]


def test_a_lost_worker_node_fails_its_trial_worker_lost_and_the_other_node_finishes_it(cluster):
    """Last in this module: the cluster keeps one worker node after it."""
    study = cluster.study(grid("lost", "[0, 1]"), "lost")
    driver = cluster.start(study, ABLATE_TEST_FAULTS='{"mlp:0": "slow"}', ABLATE_TEST_SLOW_SECONDS="6")
    running = cluster.wait_running("lost", "mlp")
    node = next(i for i, n in enumerate(cluster.ray.nodes) if n.node_id == running.data.tags["ray_node"])
    assert node != 0
    cluster.ray.kill_node(node)
    out, _ = driver.communicate(timeout=180)
    assert driver.returncode == 0 and "lost" in out, out
    runs = cluster.runs("lost")
    lost = [r for r in runs if r.info.run_id == running.info.run_id][0]
    assert (lost.info.status, lost.data.tags.get("reason")) == ("FAILED", "worker-lost")
    assert "was lost" in lost.data.tags.get("error", "")
    counts = _finished_per_hash(runs)
    assert set(counts.values()) == {1} and len(counts) == 4, (
        out,
        [(r.data.tags.get("stage"), r.data.tags.get("seed"), r.info.status, r.data.tags.get("reason")) for r in runs],
    )
    retrained = [
        r
        for r in runs
        if r.data.tags.get("trial_hash") == running.data.tags["trial_hash"] and r.info.status == "FINISHED"
    ]
    assert retrained[0].data.tags["ray_node"] != running.data.tags["ray_node"]
    code, out = cluster.run(study)
    assert code == 0 and "All 4 trials already done" in out, out
