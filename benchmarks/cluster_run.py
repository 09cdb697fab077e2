"""A study on a Ray cluster with a PostgreSQL-backed MLflow server, against the local backend on the same machine.

Starts the real components on this host (tests/_cluster.py: PostgreSQL, `mlflow server` with proxied artifacts,
a Ray head with no CPU for workers and two worker nodes), runs the study with `--backend ray`, then with the local
backend into a SQLite store, and writes results/cluster.md: wall times, FINISHED runs per trial hash, the
`ablate report` table of the cluster's run, and how its per-trial test accuracies compare with the local run's.

    python benchmarks/cluster_run.py [studies/ablations.toml] [--cpus-per-node 1] [--out results/cluster.md]
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import _cluster  # noqa: E402


def ablate(*args: str) -> tuple[float, str]:
    """Run the ablate command; its wall time and output (it must succeed)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ablate", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "ABLATE_DATA_DIR": str(REPO / "data")})
    if done.returncode != 0:
        raise SystemExit(f"ablate {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - started, done.stdout


def trial_runs(uri: str, study: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    return [r for r in runs if r.data.tags.get("role") == "trial"]


def finished_per_hash(runs) -> collections.Counter:
    """Trial hash → how many FINISHED runs it has."""
    return collections.Counter(r.data.tags["trial_hash"] for r in runs if r.info.status == "FINISHED")


def finished(runs) -> dict[str, float]:
    """Trial hash → test accuracy of its FINISHED run (asserting there is one per hash)."""
    counts = finished_per_hash(runs)
    assert set(counts.values()) == {1}, f"a trial finished more than once: {counts.most_common(3)}"
    return {r.data.tags["trial_hash"]: r.data.metrics["test_accuracy"] for r in runs if r.info.status == "FINISHED"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="studies/ablations.toml")
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--out", default="results/cluster.md")
    args = parser.parse_args()
    import torch

    from ablate.spec import load_study

    name = load_study(REPO / args.study).name
    with tempfile.TemporaryDirectory(prefix="ablate-cluster-run-") as scratch:
        root = Path(scratch)
        with (
            _cluster.postgres_server(root) as pg,
            _cluster.mlflow_server(pg.url("mlflow"), root / "artifacts", log_path=root / "mlflow.log") as tracking,
            _cluster.ray_cluster(root, worker_nodes=2, cpus_per_node=args.cpus_per_node, head_cpus=0) as ray,
        ):
            print(f"PostgreSQL {pg.url('mlflow')}, MLflow {tracking}, Ray {ray.address} ({len(ray.nodes)} nodes)")
            ray_seconds, ray_out = ablate("run", args.study, "--backend", "ray", "--address", ray.address,
                                          "--tracking-uri", str(tracking))
            print(ray_out.splitlines()[-1] if ray_out else "")
            runs = trial_runs(str(tracking), name)
            per_hash = finished_per_hash(runs)
            on_cluster = finished(runs)
            per_node = collections.Counter(r.data.tags.get("ray_node", "?")[:12] for r in runs
                                           if r.info.status == "FINISHED")
            _, table = ablate("report", "--study", name, "--tracking-uri", str(tracking))
            again_seconds, again = ablate("run", args.study, "--backend", "ray", "--address", ray.address,
                                          "--tracking-uri", str(tracking))
        local_uri = f"sqlite:///{root / 'local.db'}"
        local_seconds, _ = ablate("run", args.study, "--tracking-uri", local_uri)
        local = finished(trial_runs(local_uri, name))
    differences = [abs(on_cluster[h] - local[h]) for h in local]
    same = sum(d == 0 for d in differences)
    lines = [
        f"# {name} on a Ray cluster of three nodes, with a PostgreSQL-backed MLflow server",
        "",
        f"    python benchmarks/cluster_run.py {args.study} --cpus-per-node {args.cpus_per_node}",
        "",
        f"Machine: {platform.node()} ({os.cpu_count()} CPUs), torch {torch.__version__}; the head, two worker nodes "
        f"of {args.cpus_per_node} CPU each, PostgreSQL and the MLflow server all on this one machine "
        "(tests/_cluster.py starts them as the cluster tests do).",
        "",
        "| run | wall (s) | trials FINISHED |",
        "|---|---:|---:|",
        f"| `--backend ray` (2 worker nodes) | {ray_seconds:.0f} | {len(on_cluster)} |",
        f"| the same command again | {again_seconds:.0f} | 0 more (\"{_last_line(again)}\") |",
        f"| local backend, same machine | {local_seconds:.0f} | {len(local)} |",
        "",
        f"FINISHED runs per trial hash on the cluster: {len(per_hash)} hashes; how many hashes have n FINISHED runs: "
        f"{dict(collections.Counter(per_hash.values()))}; trials per Ray node: {dict(per_node)}.",
        "",
        f"Per-trial test accuracy, cluster vs local: {same} of {len(local)} identical, largest difference "
        f"{max(differences):.2e} (one torch thread per CPU worker: a result depends on its settings and seed only).",
        "",
        "`ablate report` of the cluster's run:",
        "",
        table.strip(),
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


def _last_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip() and "trials already done" in line]
    return lines[0].strip() if lines else out.strip().splitlines()[0]


if __name__ == "__main__":
    main()
