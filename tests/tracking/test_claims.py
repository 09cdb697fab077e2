"""The claims database's contract (ablate.tracking's claims), one suite over every database it runs on: SQLite, and
a real PostgreSQL started by the test (skipped, with the reason, where its binaries are absent). Races are run in
separate processes meeting at a barrier, as concurrent invocations meet."""

from __future__ import annotations

import multiprocessing
import platform

import pytest

from ablate.errors import StoreError
from ablate.tracking import CLAIMS_ENV, LEASE_SECONDS, Claims, Identity, Lease, claims_url
from tests import _cluster

GONE_HERE = Identity(platform.node(), 2**22 + 17, "1")  # a pid no process has: its holder is gone at once
ELSEWHERE = Identity("a-node-that-is-not-this-one", 4242, "1")  # only its lease's expiry can say it is gone
SCOPE, TRIAL = "1@1700000000000", "f00dfeed0001"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    reason = _cluster.skip_unless_cluster_components(postgres=True, mlflow=False, ray=False)
    if reason:
        pytest.skip(reason)
    with _cluster.postgres_server(tmp_path_factory.mktemp("pg"), databases=("claims",)) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.claims.db'}"
    server = request.getfixturevalue("postgres")
    claims = Claims(server.url("claims"))
    claims._write("DELETE FROM ablate_claims")  # one database for the module: each test starts empty
    claims._write("DELETE FROM ablate_decisions")
    return server.url("claims")


def _expire(claims: Claims, trial: str = TRIAL) -> None:
    """Its holder stopped renewing long ago."""
    claims._write("UPDATE ablate_claims SET expires = expires - :ago WHERE trial = :trial", ago=10 * LEASE_SECONDS,
                  trial=trial)


def test_the_first_claimant_holds_a_trial_and_the_next_finds_it_running(url):
    claims = Claims(url)
    first = claims.acquire(SCOPE, TRIAL, Identity.of_this_process(), "parent-a")
    assert first.lease == Lease(SCOPE, TRIAL, 1)
    assert claims.acquire(SCOPE, TRIAL, Identity.of_this_process(), "parent-b").elsewhere == "running"
    assert claims.acquire("2@1", TRIAL, Identity.of_this_process()).lease is not None  # another study's trial


def test_a_committed_trial_is_done_for_everyone_and_its_result_kept(url):
    claims = Claims(url)
    lease = claims.acquire(SCOPE, TRIAL, Identity.of_this_process()).lease
    assert claims.commit(lease, "run-1", {"metrics": {"test_accuracy": 0.9}})
    assert not claims.commit(lease, "run-1", {"metrics": {}})  # once
    _expire(claims)
    assert claims.acquire(SCOPE, TRIAL, Identity.of_this_process()).elsewhere == "done"  # expired or not
    assert claims.fence(SCOPE, TRIAL, 1, force=True).result == {"metrics": {"test_accuracy": 0.9}}
    claims.recorded(lease)
    assert claims.fence(SCOPE, TRIAL, 1, force=True).outcome == "finished"
    assert claims.states(SCOPE) == {TRIAL: "finished"}


@pytest.mark.parametrize("holder", [GONE_HERE, ELSEWHERE], ids=["gone-here", "expired-elsewhere"])
def test_a_gone_holder_is_taken_over_and_can_no_longer_commit(url, holder):
    claims = Claims(url)
    old = claims.acquire(SCOPE, TRIAL, holder).lease
    claims.attach(old, "run-old")
    if holder is ELSEWHERE:
        assert claims.acquire(SCOPE, TRIAL, Identity.of_this_process()).elsewhere == "running"  # renewed: alive
        _expire(claims)
    taken = claims.acquire(SCOPE, TRIAL, Identity.of_this_process())
    assert taken.lease == Lease(SCOPE, TRIAL, 2) and taken.previous_run == "run-old"
    assert claims.renew([old, taken.lease]) == [old]  # the old holder learns it at its next beat
    assert not claims.commit(old, "run-old", {})
    assert claims.commit(taken.lease, "run-new", {})


def test_a_holder_whose_invocation_is_gone_is_taken_over_at_once(url):
    """An orphaned worker lives until its next step notices; its claim is not worth waiting for."""
    claims = Claims(url)
    claims.acquire(SCOPE, TRIAL, Identity.of_this_process(), "parent-run", parent=GONE_HERE)
    assert claims.acquire(SCOPE, TRIAL, Identity.of_this_process()).lease.token == 2


def test_fencing_a_live_holder_needs_force_and_then_it_cannot_commit(url):
    claims = Claims(url)
    lease = claims.acquire(SCOPE, TRIAL, Identity.of_this_process()).lease
    assert claims.fence(SCOPE, TRIAL, 1).outcome == "live"
    assert claims.fence(SCOPE, TRIAL, 1, force=True).outcome == "fenced"  # its worker was seen to die
    assert not claims.commit(lease, "run-1", {})
    assert claims.fence(SCOPE, TRIAL, 1).outcome == "fenced"  # still, and nothing more to do
    again = claims.acquire(SCOPE, TRIAL, Identity.of_this_process()).lease  # a released claim is free
    assert again.token == 2 and claims.fence(SCOPE, TRIAL, 1).outcome == "fenced"  # superseded
    assert claims.fence(SCOPE, "no-such-trial", 1).outcome == "unclaimed"


def test_a_released_trial_is_claimed_again_under_a_new_token(url):
    claims = Claims(url)
    lease = claims.acquire(SCOPE, TRIAL, Identity.of_this_process()).lease
    claims.release(lease)
    assert claims.acquire(SCOPE, TRIAL, Identity.of_this_process()).lease.token == 2
    assert not claims.commit(lease, "run-1", {})


def test_a_decision_is_the_first_writers(url):
    claims = Claims(url)
    assert claims.decided(SCOPE, "confirm") is None
    assert claims.decide(SCOPE, "confirm", [3, 1]) == [3, 1]
    assert claims.decide(SCOPE, "confirm", [2]) == [3, 1]
    assert Claims(url).decided(SCOPE, "confirm") == [3, 1]


def _race(url: str, trial: str, barrier, results) -> None:
    claims = Claims(url)
    barrier.wait(timeout=120)
    claimed = claims.acquire(SCOPE, trial, Identity.of_this_process())
    results.put(None if claimed.lease is None else claimed.lease.token)
    barrier.wait(timeout=120)  # hold it (this process alive) until every claimant has tried


@pytest.mark.parametrize("contest", ["new", "takeover"])
def test_of_eight_processes_claiming_at_once_exactly_one_wins(url, contest):
    """`new`: nobody has the trial (the insert race); `takeover`: its holder is gone (the conditional update race)."""
    if contest == "takeover":
        Claims(url).acquire(SCOPE, TRIAL, GONE_HERE)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(8), context.Queue()
    processes = [context.Process(target=_race, args=(url, TRIAL, barrier, results)) for _ in range(8)]
    for process in processes:
        process.start()
    tokens = [results.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert sorted(tokens, key=str) == [1 if contest == "new" else 2] + [None] * 7, tokens


def test_a_claims_database_that_cannot_be_opened_is_one_clear_error(tmp_path):
    with pytest.raises(StoreError, match="claims database .*missing.*--claims"):
        Claims(f"sqlite:///{tmp_path / 'missing' / 'x.claims.db'}").acquire(SCOPE, TRIAL, Identity.of_this_process())


def test_the_claims_database_follows_the_store_unless_named(tmp_path, monkeypatch):
    monkeypatch.delenv(CLAIMS_ENV, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert claims_url(f"sqlite:///{tmp_path}/runs.db") == f"sqlite:///{tmp_path}/runs.claims.db"  # beside it
    assert claims_url("postgresql+psycopg://u:p@db/mlflow") == "postgresql+psycopg://u:p@db/mlflow"  # its database
    assert claims_url("http://server:5000", storage="postgresql://u@db/optuna") == "postgresql://u@db/optuna"
    mine = claims_url("http://server:5000", storage=str(tmp_path / "journal.log"))  # this machine's only
    assert mine.startswith(f"sqlite:///{tmp_path}/state/ablate/claims/") and mine != claims_url("http://other:5000")
    assert claims_url("http://server:5000", claims="postgresql://named") == "postgresql://named"
    monkeypatch.setenv(CLAIMS_ENV, "postgresql://from-env")
    assert claims_url(f"sqlite:///{tmp_path}/runs.db") == "postgresql://from-env"
