"""Exactly once under chaos (tests/_chaos.py): invocations of a grid and of a search at once, half of them killed
(-9, the driver alone or with its workers) or stopped (SIGTERM) at a random moment, a reader racing them; then one
clean run, and every trial trained once, no FINISHED run changed, the search's budget kept and one confirm set.

In the default suite, one round of each (4 invocations of the grid, 3 of the search); marked `long` (pytest -m
long), the whole matrix — 2, 4 and 8 invocations of each — and two invocations against the PostgreSQL-backed MLflow
server of the cluster tests. Each round draws its moments and victims from a seed it prints on failure
(ABLATE_CHAOS_SEED to replay one; ABLATE_CHAOS_ROUNDS to repeat the matrix)."""

from __future__ import annotations

import os
import random

import pytest

from tests import _chaos, _cluster

pytestmark = pytest.mark.slow

ROUNDS = int(os.environ.get("ABLATE_CHAOS_ROUNDS", "1"))


def _round(kind: str, drivers: int, folder, **options) -> None:
    seed = int(os.environ.get("ABLATE_CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    outcome = _chaos.run_round(_chaos.REPO, folder, kind, drivers, random.Random(seed), **options)
    assert not outcome.problems, f"seed {seed}: {outcome.line()}"


@pytest.mark.parametrize("kind, drivers", [("grid", 4), ("search", 3)])
def test_invocations_at_once_some_killed_train_each_trial_once(kind, drivers, tmp_path):
    _round(kind, drivers, tmp_path)


@pytest.mark.long
@pytest.mark.parametrize("kind", ["grid", "search"])
def test_two_four_and_eight_invocations_some_killed_train_each_trial_once(kind, tmp_path):
    for round_ in range(ROUNDS):
        for drivers in (2, 4, 8):
            _round(kind, drivers, tmp_path / f"{round_}-{drivers}")


@pytest.mark.long
@pytest.mark.cluster
@pytest.mark.parametrize("kind", ["grid", "search"])
def test_two_invocations_against_a_postgresql_backed_mlflow_server(kind, tmp_path):
    reason = _cluster.skip_unless_cluster_components(ray=False)
    if reason:
        pytest.skip(reason)
    with (_cluster.postgres_server(tmp_path) as pg,
          _cluster.mlflow_server(pg.url("mlflow"), tmp_path / "artifacts", log_path=tmp_path / "mlflow.log") as url):
        _round(kind, 2, tmp_path / "run", uri=str(url), extra=("--claims", pg.url("mlflow")),
               storage=pg.url("optuna") if kind == "search" else None)
