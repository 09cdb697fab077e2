"""Exactly once under chaos (tests/_chaos.py): 2, 4 and 8 invocations of a grid and of a search at once, half of them
killed (-9, the driver alone or with its workers) or stopped (SIGTERM) at a random moment, a reader racing them; then
one clean run, and every trial trained once, no FINISHED run changed, the search's budget kept and one confirm set.
The same with two invocations against the PostgreSQL-backed MLflow server of the cluster tests.

Each round draws its moments and victims from a seed it prints on failure (ABLATE_CHAOS_SEED to replay one;
ABLATE_CHAOS_ROUNDS to repeat)."""

from __future__ import annotations

import os
import random

import pytest

from tests import _chaos, _cluster

pytestmark = pytest.mark.slow

ROUNDS = int(os.environ.get("ABLATE_CHAOS_ROUNDS", "1"))


def _seed() -> int:
    return int(os.environ.get("ABLATE_CHAOS_SEED") or random.SystemRandom().randrange(10**6))


@pytest.mark.parametrize("kind", ["grid", "search"])
def test_concurrent_invocations_killed_at_random_train_each_trial_once(kind, tmp_path):
    for round_ in range(ROUNDS):
        for drivers in (2, 4, 8):
            seed = _seed()
            outcome = _chaos.run_round(_chaos.REPO, tmp_path / f"{round_}-{drivers}", kind, drivers,
                                       random.Random(seed))
            assert not outcome.problems, f"seed {seed}: {outcome.line()}"


@pytest.mark.cluster
@pytest.mark.parametrize("kind", ["grid", "search"])
def test_two_invocations_against_a_postgresql_backed_mlflow_server(kind, tmp_path):
    reason = _cluster.skip_unless_cluster_components(ray=False)
    if reason:
        pytest.skip(reason)
    with (_cluster.postgres_server(tmp_path) as pg,
          _cluster.mlflow_server(pg.url("mlflow"), tmp_path / "artifacts", log_path=tmp_path / "mlflow.log") as url):
        seed = _seed()
        outcome = _chaos.run_round(_chaos.REPO, tmp_path / "run", kind, 2, random.Random(seed), uri=str(url),
                                   extra=("--claims", pg.url("mlflow")),
                                   storage=pg.url("optuna") if kind == "search" else None)
        assert not outcome.problems, f"seed {seed}: {outcome.line()}"
