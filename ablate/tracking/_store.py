"""The tracking store before MLflow opens it, and what it already holds for a study — read without MLflow.

`ablate plan` shows each trial's status against the store and must stay fast, so for the
default SQLite store it reads MLflow's tables directly (read-only); other stores go through
MLflow's client. `check_store` finds, before anything is created or MLflow is imported,
every problem a SQLite store can have that would otherwise surface as a traceback halfway
through a study: a directory, a missing folder, a read-only file, a file that is not an
SQLite database, a store whose first-use setup was cut short.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ablate.errors import StoreError
from ablate.tracking._tags import ROLE, TRIAL_HASH, sqlite_path

SQLITE_HEADER = b"SQLite format 3\x00"
URI_SPECIAL = set("?#%")  # characters that a sqlite:/// URI would read as a query, a fragment or an escape


def default_uri(folder: Path | None = None) -> str:
    """The default store: mlflow.db in `folder` (the current one). A folder whose path holds URI-special
    characters gets the relative form (`sqlite:///mlflow.db`, what `mlflow ui` opens by default): SQLAlchemy and
    MLflow would each read an escaped absolute path differently."""
    folder = Path.cwd() if folder is None else folder
    path = folder.resolve() / "mlflow.db"
    if URI_SPECIAL & set(str(path)) and folder.resolve() == Path.cwd().resolve():
        return "sqlite:///mlflow.db"
    return f"sqlite:///{path}"


TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable: the store its tools (mlflow ui aside) use


def store_uri(flag: str | None = None) -> str:
    """The store a command uses, decided in one place: --tracking-uri, else $MLFLOW_TRACKING_URI (as MLflow's own
    clients read it), else `default_uri()`. An empty flag or variable counts as none."""
    return flag or os.environ.get(TRACKING_URI_ENV) or default_uri()


def store_label(uri: str) -> str:
    """The store as a person reads it: an absolute file for SQLite (which folder matters), else the URI."""
    path = sqlite_path(uri)
    return str(path.resolve()) if path is not None else uri


def store_is_new(uri: str) -> bool:
    """A SQLite store that does not exist yet (the first `ablate run` creates it)."""
    path = sqlite_path(uri)
    return path is not None and not path.exists()


def check_store(uri: str, write: bool) -> None:
    """Stop, before anything is created, on a SQLite store that cannot work (see the module docstring).
    `write`: the caller records runs (a read-only store is fine for plan and report). Other stores are
    checked when MLflow opens them (ablate.tracking's open_tracker)."""
    path = sqlite_path(uri)
    if path is None:
        return
    where = store_label(uri)
    if path.is_dir():
        raise StoreError(f"tracking store {where} is a folder, not an MLflow database: pass "
                         f"--tracking-uri sqlite:///{path.resolve() / 'mlflow.db'} (a file inside it), or move it away")
    if not path.exists():
        if not path.resolve().parent.is_dir():
            raise StoreError(f"tracking store {where}: its folder {path.resolve().parent} does not exist; create it "
                             "or pass another --tracking-uri")
        if write and not os.access(path.resolve().parent, os.W_OK):
            raise StoreError(f"tracking store {where} cannot be created: {path.resolve().parent} is read-only; run "
                             "from a writable folder or pass --tracking-uri sqlite:////a/writable/folder/mlflow.db")
        return
    _check_sqlite_file(path, where)
    if write and not (os.access(path, os.W_OK) and os.access(path.resolve().parent, os.W_OK)):
        raise StoreError(f"tracking store {where} is read-only (SQLite also needs to write beside it, in "
                         f"{path.resolve().parent}): make both writable, or copy the store to a writable folder and "
                         "pass --tracking-uri")


def _check_sqlite_file(path: Path, where: str) -> None:
    with open(path, "rb") as file:
        header = file.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise StoreError(f"tracking store {where} is not an SQLite database (a damaged or foreign file): move it "
                         "away to start a new store, or pass --tracking-uri with the right one; ablate did not "
                         "touch it")
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revision = "alembic_version" in tables
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"tracking store {where} is damaged ({exc}): restore it from a backup, or move it away to "
                         "start a new store; ablate did not touch it") from exc
    if tables and "experiments" not in tables and not revision:  # (a store being set up has both early on)
        raise StoreError(f"tracking store {where} is an SQLite database but not an MLflow store (another program's): "
                         "pass --tracking-uri with another file; ablate did not touch it")


@dataclass(frozen=True)
class RunState:
    """What the store holds for one run: its status, latest metrics and tags."""

    status: str
    metrics: dict[str, float]
    tags: dict[str, str]


def trial_statuses(uri: str, study: str) -> dict[str, str] | None:
    """Trial hash → 'done' (a FINISHED run exists), else the latest run's status in lower case; None: no store."""
    path = sqlite_path(uri)
    if path is not None:
        if not path.exists():
            return None
        check_store(uri, write=False)  # a damaged store is said so, not shown as "every trial to do"
        rows = _sqlite_rows(path, study)
    else:
        rows = _client_rows(uri, study)
    statuses: dict[str, str] = {}
    for trial_hash, status in rows:  # oldest first
        if statuses.get(trial_hash) != "done":
            statuses[trial_hash] = "done" if status == "FINISHED" else status.lower()
    return statuses


def _sqlite_rows(path: Path, study: str) -> list[tuple[str, str]]:
    query = """
        SELECT t.value, r.status FROM runs r
        JOIN experiments e ON e.experiment_id = r.experiment_id
        JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ?
        WHERE e.name = ? AND r.lifecycle_stage = 'active'
        ORDER BY r.start_time
    """
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as connection:
        if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchall():
            return []  # an empty file: nothing recorded yet
        return connection.execute(query, (TRIAL_HASH, study)).fetchall()


def _client_rows(uri: str, study: str) -> list[tuple[str, str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.{ROLE} = 'trial'", max_results=50_000)
    runs = sorted(runs, key=lambda r: r.info.start_time)
    return [(r.data.tags.get(TRIAL_HASH, ""), r.info.status) for r in runs]
