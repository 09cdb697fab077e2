"""The real cluster components of tests/_cluster.py, each checked end to end on localhost: PostgreSQL with an MLflow
tracking server on it (runs, metrics and proxied artifacts through HTTP, rows in PostgreSQL), an Optuna study in
PostgreSQL, and a three-node Ray cluster that loses a node.

These are the building blocks of multi-host tests; if they fail here, they will fail there, with a clearer
message here. Start times and memory are printed (see them with ``-s`` or ``-rP``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests._cluster import (
    descendants,
    mlflow_server,
    postgres_server,
    ray_cluster,
    require_cluster_components,
    rss_mb,
)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _report(what: str, seconds: float, pids: list[int] | None = None) -> None:
    memory = f", {rss_mb(pids):.0f} MiB resident" if pids else ""
    print(f"[cluster] {what} started in {seconds:.1f}s{memory}")


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    """One PostgreSQL for the module (databases mlflow and optuna): a start is ~2 s of initdb we need only once."""
    require_cluster_components(ray=False)
    started = time.monotonic()
    with postgres_server(tmp_path_factory.mktemp("pg")) as server:
        _report("postgres", time.monotonic() - started, [server.pid, *descendants(server.pid)])
        yield server


def test_mlflow_server_on_postgres_round_trip(pg, tmp_path):
    from mlflow import MlflowClient

    artifacts = tmp_path / "artifacts"
    started = time.monotonic()
    with mlflow_server(pg.url("mlflow"), artifacts) as url:
        _report("mlflow server (with migrations)", time.monotonic() - started, [url.pid, *descendants(url.pid)])
        client = MlflowClient(tracking_uri=url)
        experiment_id = client.create_experiment("cluster-check")
        run_id = client.create_run(experiment_id).info.run_id
        client.log_param(run_id, "lr", "0.1")
        client.log_metric(run_id, "loss", 0.25, step=3)
        note = tmp_path / "note.txt"
        note.write_text("through the server")
        client.log_artifact(run_id, str(note))
        client.set_terminated(run_id)

        run = client.get_run(run_id)
        assert run.data.metrics == {"loss": 0.25} and run.data.params == {"lr": "0.1"}
        assert [(m.value, m.step) for m in client.get_metric_history(run_id, "loss")] == [(0.25, 3)]
        # Proxied: the client knows only an mlflow-artifacts: URI; the server wrote the file into its destination.
        assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")
        assert [a.path for a in client.list_artifacts(run_id)] == ["note.txt"]
        downloaded = client.download_artifacts(run_id, "note.txt", str(tmp_path / "downloaded"))
        assert Path(downloaded).read_text() == "through the server"
        assert [p.read_text() for p in artifacts.rglob("note.txt")] == ["through the server"]

        with pg.connect("mlflow") as conn:
            assert conn.execute("SELECT status, experiment_id FROM runs WHERE run_uuid = %s",
                                (run_id,)).fetchone() == ("FINISHED", int(experiment_id))
            assert conn.execute("SELECT value, step FROM metrics WHERE run_uuid = %s AND key = 'loss'",
                                (run_id,)).fetchall() == [(0.25, 3)]


def test_optuna_study_in_postgres(pg):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(pg.url("optuna"))
    reopened = None
    try:
        study = optuna.create_study(storage=storage, study_name="cluster-check", direction="minimize")
        study.optimize(lambda trial: (trial.suggest_float("x", -1.0, 1.0) - 0.5) ** 2, n_trials=5)
        reopened = optuna.storages.RDBStorage(pg.url("optuna"))
        again = optuna.load_study(study_name="cluster-check", storage=reopened)
        assert len(again.trials) == 5
        assert again.best_value == study.best_value
        with pg.connect("optuna") as conn:
            assert conn.execute("SELECT count(*) FROM trials JOIN studies USING (study_id) WHERE study_name = %s",
                                ("cluster-check",)).fetchone() == (5,)
    finally:
        for s in (storage, reopened):
            if s is not None:
                s.engine.dispose()  # give PostgreSQL its connections back before the module's server stops


@pytest.mark.long  # a 3-node Ray cluster: tests/e2e/test_ray_cluster.py's component, run with them
def test_ray_cluster_loses_a_worker_node(tmp_path):
    require_cluster_components(postgres=False, mlflow=False)
    import ray
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    started = time.monotonic()
    with ray_cluster(tmp_path, worker_nodes=2, cpus_per_node=1) as cluster:
        pids = [p for i in range(3) for p in cluster.node_processes(i)]
        _report("ray head + 2 workers", time.monotonic() - started, pids)
        assert len(cluster.alive_nodes()) == 3
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        try:
            alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
            assert alive == {node.node_id for node in cluster.nodes}

            @ray.remote(num_cpus=0)
            class Where:
                def node(self) -> str:
                    return ray.get_runtime_context().get_node_id()

            actors = {i: Where.options(resources={cluster.nodes[i].resource: 0.01}).remote() for i in (1, 2)}
            assert ray.get([actors[i].node.remote() for i in (1, 2)], timeout=60) == [
                cluster.nodes[1].node_id, cluster.nodes[2].node_id]

            killed = time.monotonic()
            escaped = cluster.kill_node(1)
            print(f"[cluster] node 1 killed; processes that outlived its process group by 2 s: {escaped}")
            assert cluster.node_processes(1) == []  # raylet, agents and the actor's worker: all gone

            deadline = time.monotonic() + 30
            while any(n["NodeID"] == cluster.nodes[1].node_id and n["Alive"] for n in ray.nodes()):
                assert time.monotonic() < deadline, "GCS still reports the killed node alive after 30 s"
                time.sleep(0.2)
            print(f"[cluster] ray reported node 1 dead {time.monotonic() - killed:.1f}s after SIGKILL")

            with pytest.raises((ActorDiedError, ActorUnavailableError)):
                ray.get(actors[1].node.remote(), timeout=30)
            assert ray.get(actors[2].node.remote(), timeout=30) == cluster.nodes[2].node_id  # the rest carries on
        finally:
            ray.shutdown()
