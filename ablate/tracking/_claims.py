"""Claims: who may train a trial, decided by a conditional write that only one claimant can win.

MLflow has no compare-and-set: a protocol built on reading a run and then writing it (is the
rival dead? then take over) races — between the read and the write the rival finishes, and a
trial trains twice while a finished run is overwritten FAILED. So a trial's right to train is
a *lease* in a database with atomic conditional updates (SQLite, PostgreSQL, MySQL), one row
per (experiment, trial hash); MLflow only records what the lease holder did.

The row: `state` (held, committed, finished, free), a fencing `token` that grows with every
acquisition, the holder (host, pid, process start, the invocation's parent run), the holder's
MLflow run, an `expires` time its heartbeat pushes forward, and at commit the final metrics.

The contract, which every caller relies on:
- **acquire** inserts the row (the primary key lets one inserter win) or takes it over with
  `UPDATE … WHERE token = t AND state = s`: only from `free`, or from `held` whose holder is
  gone — its lease expired by the database's clock, or, on the holder's own host, its process
  is not running (exact at once; a recycled pid is told apart by its start time). Of any
  number of claimants, one wins; a `committed` or `finished` row is never acquired again.
- **commit** is the only way to the trial's end: `held → committed` under the holder's token,
  storing the final metrics in the same write. A holder whose lease was taken (or revoked)
  fails here and never writes FINISHED. Once committed, the trial is done: its run is then
  completed — final metrics and FINISHED — by the holder, or, if it dies first, by whoever
  settles the run later from the stored metrics (the same values and timestamps, so both
  writing is harmless). At most one run of a trial is ever committed.
- **fence** is what anyone must do before ending another's run: it revokes the lease
  (`held → free` under that run's token) or finds it already superseded, so the run's worker
  can no longer commit; a committed lease is never revoked (its run is completed instead).
  So a run that finished is never changed by anyone but its own worker, and a takeover
  never writes over a run that may have finished.
- **renew** (the holder's heartbeat) pushes `expires` forward under its token and tells the
  holder when its lease is gone, so it stops early.
- **decide** stores a value under a key once (insert-if-absent): every caller gets the
  first writer's value (a search's confirm set).

Prior art, and what is taken from it. Optuna's RDB storage fails a stale trial (fail_stale_trials) by a state
change the storage makes only while the trial RUNs — under a row lock, raising UpdateFinishedTrialError for the
loser — and only the process whose change won runs the failure callback: the same conditional write, which is why a
search's trials are claimed by Optuna itself. Job queues lease work: Celery re-delivers an unacknowledged task after
a visibility timeout (at least once: the worker must be idempotent), Airflow's scheduler takes task instances with
SELECT … FOR UPDATE SKIP LOCKED and fails zombies whose heartbeat stopped. Neither keeps a lapsed worker from
finishing: here the fencing token does (Kleppmann, "How to do distributed locking", 2016), as the commit is
conditional on it. Ray Tune leaves exclusivity to its single driver; ablate has any number of drivers.

What it assumes: every invocation of a study uses the same claims database for as long as
the tracking store lives (by default one derived from the store — `claims_url`); the database
makes single-row conditional updates atomic (SQLite on a local disk — its locks are not
reliable over NFS — PostgreSQL, MySQL). Expiry is judged by the database's clock (SQLite: the
clock of the one machine that holds the file), so hosts need not agree on the time. A holder
that stalls for longer than LEASE_SECONDS (a suspended process, a network partition) loses its
lease and its work is wasted, never recorded twice. Runs written by ablate before claims
existed (no claim_token tag) are judged by their heartbeats, as then.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.errors import AblateError, StoreError
from ablate.tracking._claims_url import claims_label
from ablate.tracking._liveness import BEAT_SECONDS, STALE_AFTER, Identity
from ablate.tracking._tags import sqlite_path

LEASE_SECONDS = STALE_AFTER * BEAT_SECONDS  # a lease not renewed for this long is the holder's no longer
TABLE, DECISIONS = "ablate_claims", "ablate_decisions"
HELD, COMMITTED, FINISHED, FREE = "held", "committed", "finished", "free"
# SQL for "now" in seconds, by the database's own clock (see the contract). A dialect without one uses the caller's.
_NOW = {
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    "postgresql": "extract(epoch from clock_timestamp())",
    "mysql": "unix_timestamp(now(6))",
}
_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        scope VARCHAR(255) NOT NULL, trial VARCHAR(255) NOT NULL, state VARCHAR(16) NOT NULL,
        token INTEGER NOT NULL, host VARCHAR(255) NOT NULL, pid INTEGER, pid_start VARCHAR(64),
        invocation VARCHAR(64), parent_host VARCHAR(255), parent_pid INTEGER, parent_start VARCHAR(64),
        run_id VARCHAR(64), expires DOUBLE PRECISION NOT NULL, result TEXT,
        PRIMARY KEY (scope, trial))""",
    f"""CREATE TABLE IF NOT EXISTS {DECISIONS} (
        scope VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL, value TEXT NOT NULL, PRIMARY KEY (scope, name))""",
)
_COLUMNS = "state, token, host, pid, pid_start, parent_host, parent_pid, parent_start, run_id, result"


@dataclass(frozen=True)
class Lease:
    """A held claim: the right to train one trial, as long as `token` is the row's."""

    scope: str
    trial: str
    token: int


@dataclass(frozen=True)
class Claimed:
    """What acquire got: a lease, or why not ('done': committed or finished; 'running': a live holder has it)."""

    lease: Lease | None
    elsewhere: str = ""
    previous_run: str | None = None  # the run of a holder taken over: fenced, its runner can no longer commit


@dataclass(frozen=True)
class Fence:
    """What fence found: 'fenced' (the run's worker can no longer commit), 'committed' (its trial is done: complete
    the run from `result`), 'finished' (recorded), 'live' (a live holder: untouched), or 'unclaimed' (no row)."""

    outcome: str
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Row:
    state: str
    token: int
    holder: Identity
    parent: Identity  # the holder's invocation: a worker whose invocation is gone stops at its next step
    run_id: str | None
    result: str | None
    expired: bool

    def gone(self) -> bool:
        """Is the holder gone: its lease expired, or, on its host, its process or its invocation's not running? An
        orphaned worker would give its trial up at its next step; taken over now, it can no longer commit."""
        return self.expired or any(who.here and not who.running() for who in (self.holder, self.parent))


class Claims:
    """The claims database (see the module's contract). One per process; safe to share between its threads."""

    def __init__(self, url: str):
        import sqlalchemy

        self.url = url
        self.label = claims_label(url)
        kwargs: dict[str, Any] = {}
        target: Any = url
        path = sqlite_path(url)
        if path is not None:  # the file by name, not re-parsed: a folder may hold '?' or '#'
            target = sqlalchemy.engine.URL.create("sqlite", database=str(path))
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        else:  # a server takes a bounded number of connections: hold one only while talking (as search's storage)
            kwargs["poolclass"] = sqlalchemy.pool.NullPool
        try:
            self.engine = sqlalchemy.create_engine(target, **kwargs)
        except Exception as exc:  # noqa: BLE001 — a malformed URL, a driver not installed
            raise AblateError(f"claims database {self.label}: {exc}; pass --claims with a database URL "
                              "(sqlite:///…, postgresql://…)") from exc
        self.now = _NOW.get(self.engine.dialect.name)
        self._create()

    # -- a trial's lease ---------------------------------------------------------------

    def acquire(self, scope: str, trial: str, holder: Identity, invocation: str | None = None,
                parent: Identity | None = None) -> Claimed:
        """The lease of a trial for `holder` (the process that trains and commits it), started by `parent` (its
        invocation's process, whose parent run is `invocation`), or why another has it. Contested rounds retry at
        once: each lost round means someone else's write won, so the next read sees a newer row."""
        who = _who(holder, invocation, parent)
        while True:
            row = self._row(scope, trial)
            if row is None:
                if self._insert(scope, trial, who):
                    return Claimed(Lease(scope, trial, 1))
                continue
            if row.state in (COMMITTED, FINISHED):
                return Claimed(None, "done")
            if row.state == HELD and not row.gone():
                return Claimed(None, "running")
            taken = self._write(
                f"UPDATE {TABLE} SET state = '{HELD}', token = token + 1, {', '.join(f'{k} = :{k}' for k in who)}, "
                f"run_id = NULL, result = NULL, expires = {self._now()} + :lease "
                "WHERE scope = :scope AND trial = :trial AND token = :token AND state = :state",
                **who, lease=LEASE_SECONDS, scope=scope, trial=trial, token=row.token, state=row.state)
            if taken:
                previous = row.run_id if row.state == HELD else None
                return Claimed(Lease(scope, trial, row.token + 1), previous_run=previous)

    def attach(self, lease: Lease, run_id: str) -> None:
        """The lease's MLflow run, once it exists (a takeover ends it FAILED: see Claimed.previous_run)."""
        self._write(f"UPDATE {TABLE} SET run_id = :run WHERE scope = :scope AND trial = :trial AND token = :token",
                    run=run_id, **_key(lease))

    def renew(self, leases: list[Lease]) -> list[Lease]:
        """Push each lease's expiry forward; the leases that are no longer the holder's."""
        return [lease for lease in leases if not self._write(
            f"UPDATE {TABLE} SET expires = {self._now()} + :lease WHERE scope = :scope AND trial = :trial "
            f"AND token = :token AND state IN ('{HELD}', '{COMMITTED}')", lease=LEASE_SECONDS, **_key(lease))]

    def commit(self, lease: Lease, run_id: str, result: dict[str, Any]) -> bool:
        """The trial is done, with these final metrics (see the contract); False: the lease is no longer ours."""
        return self._write(
            f"UPDATE {TABLE} SET state = '{COMMITTED}', run_id = :run, result = :result WHERE scope = :scope "
            f"AND trial = :trial AND token = :token AND state = '{HELD}'",
            run=run_id, result=json.dumps(result), **_key(lease))

    def recorded(self, lease: Lease) -> None:
        """The committed trial's run is FINISHED in the store."""
        self._write(f"UPDATE {TABLE} SET state = '{FINISHED}' WHERE scope = :scope AND trial = :trial "
                    f"AND token = :token AND state = '{COMMITTED}'", **_key(lease))

    def adopt(self, lease: Lease) -> None:
        """A FINISHED run of the trial exists that no lease committed (written before claims): it stands."""
        self._write(f"UPDATE {TABLE} SET state = '{FINISHED}' WHERE scope = :scope AND trial = :trial "
                    f"AND token = :token AND state = '{HELD}'", **_key(lease))

    def release(self, lease: Lease) -> None:
        """Give a held lease up (the trial failed or was stopped): anyone may acquire it again."""
        self._write(f"UPDATE {TABLE} SET state = '{FREE}' WHERE scope = :scope AND trial = :trial "
                    f"AND token = :token AND state = '{HELD}'", **_key(lease))

    def fence(self, scope: str, trial: str, token: int, force: bool = False) -> Fence:
        """Make sure the run holding `token` can no longer commit, before its run is ended by someone else (see the
        contract). `force`: its worker is known to be gone (the caller saw it die), whatever the lease says."""
        while True:
            row = self._row(scope, trial)
            if row is None:
                return Fence("unclaimed")
            if row.token != token or row.state == FREE:
                return Fence("fenced")
            if row.state == FINISHED:
                return Fence("finished")
            if not (force or row.gone()):
                return Fence("live")
            if row.state == COMMITTED:
                return Fence("committed", json.loads(row.result or "{}"))
            if self._write(f"UPDATE {TABLE} SET state = '{FREE}' WHERE scope = :scope AND trial = :trial "
                           f"AND token = :token AND state = '{HELD}'", scope=scope, trial=trial, token=token):
                return Fence("fenced")

    def states(self, scope: str) -> dict[str, str]:
        """Trial hash → its lease's state, for one scope."""
        rows = self._read(f"SELECT trial, state FROM {TABLE} WHERE scope = :scope", scope=scope)
        return {trial: state for trial, state in rows}

    # -- decisions ---------------------------------------------------------------------

    def decide(self, scope: str, name: str, value: Any) -> Any:
        """`value` stored under `name` unless a value is there already; the stored one either way."""
        import sqlalchemy

        try:
            self._write(f"INSERT INTO {DECISIONS} (scope, name, value) VALUES (:scope, :name, :value)",
                        scope=scope, name=name, value=json.dumps(value))
        except sqlalchemy.exc.IntegrityError:
            pass  # decided by someone else first
        rows = self._read(f"SELECT value FROM {DECISIONS} WHERE scope = :scope AND name = :name",
                          scope=scope, name=name)
        return json.loads(rows[0][0])

    def decided(self, scope: str, name: str) -> Any | None:
        rows = self._read(f"SELECT value FROM {DECISIONS} WHERE scope = :scope AND name = :name",
                          scope=scope, name=name)
        return json.loads(rows[0][0]) if rows else None

    # -- SQL -----------------------------------------------------------------------------

    def _now(self) -> str:
        return self.now if self.now is not None else f"{time.time():.3f}"

    def _row(self, scope: str, trial: str) -> _Row | None:
        rows = self._read(f"SELECT {_COLUMNS}, expires < {self._now()} FROM {TABLE} "
                          "WHERE scope = :scope AND trial = :trial", scope=scope, trial=trial)
        if not rows:
            return None
        state, token, host, pid, start, parent_host, parent_pid, parent_start, run_id, result, expired = rows[0]
        return _Row(state, int(token), Identity(host, pid, start or ""),
                    Identity(parent_host or "", parent_pid, parent_start or ""), run_id, result, bool(expired))

    def _insert(self, scope: str, trial: str, who: dict[str, Any]) -> bool:
        import sqlalchemy

        try:
            self._write(
                f"INSERT INTO {TABLE} (scope, trial, state, token, {', '.join(who)}, expires) VALUES (:scope, :trial, "
                f"'{HELD}', 1, {', '.join(f':{k}' for k in who)}, {self._now()} + :lease)",
                scope=scope, trial=trial, **who, lease=LEASE_SECONDS)
        except sqlalchemy.exc.IntegrityError:
            return False  # another claimant inserted it first
        return True

    def _write(self, sql: str, **params: Any) -> bool:
        """One statement in a transaction of its own; True when it changed a row."""
        import sqlalchemy

        with self._guarded(), self.engine.begin() as connection:
            return connection.execute(sqlalchemy.text(sql), params).rowcount > 0

    def _read(self, sql: str, **params: Any) -> list[tuple]:
        import sqlalchemy

        with self._guarded(), self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sqlalchemy.text(sql), params)]

    def _create(self) -> None:
        """The tables, if missing. Two processes creating them at once may both try (PostgreSQL's IF NOT EXISTS is not
        race-free): the loser finds them made."""
        import sqlalchemy

        path = sqlite_path(self.url)
        if path is not None and path.parent.is_dir() and not path.exists():
            _new_sqlite(path)
        for statement in _SCHEMA:
            try:
                self._write(statement)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                pass

    def _guarded(self):
        return _guarded(self.label)

    def dispose(self) -> None:
        self.engine.dispose()


class _guarded:
    """A failing claims database is a StoreError (exit 3) naming it, as a failing tracking store is; a lost round of
    a race (IntegrityError) is the caller's to handle."""

    def __init__(self, label: str):
        self.label = label

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, trace) -> bool:
        import sqlalchemy

        if exc is None or isinstance(exc, sqlalchemy.exc.IntegrityError) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
            raise StoreError(f"claims database {self.label} failed ({_first_line(exc)}): check that it is reachable "
                             "and writable (disk space, permissions), or pass --claims with another; nothing "
                             "recorded was changed") from exc
        return False


def _new_sqlite(path: Path) -> None:
    """A new SQLite claims file in write-ahead-log mode: readers (every claimant's look at a row) never wait for the
    writer. Several processes creating it at once is SQLite's to arbitrate; the mode is the file's, set once."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def _who(holder: Identity, invocation: str | None, parent: Identity | None) -> dict[str, Any]:
    """The holder's columns of a row."""
    parent = parent or Identity("", None)
    return {"host": holder.host, "pid": holder.pid, "pid_start": holder.start, "invocation": invocation,
            "parent_host": parent.host, "parent_pid": parent.pid, "parent_start": parent.start}


def _key(lease: Lease) -> dict[str, Any]:
    return {"scope": lease.scope, "trial": lease.trial, "token": lease.token}


def _first_line(exc: BaseException) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0][:300]
