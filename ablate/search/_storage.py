"""Where an Optuna study lives: a journal file beside the MLflow store by default, or an RDB URL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ablate.errors import AblateError
from ablate.tracking import sqlite_path

if TYPE_CHECKING:
    import optuna

JOURNAL_FILE = "optuna-journal.log"


def default_storage(tracking_uri: str) -> str:
    """A journal file beside a SQLite MLflow store; other stores need --storage."""
    database = sqlite_path(tracking_uri)
    if database is None:
        raise AblateError(
            f"a search with tracking URI {tracking_uri} needs --storage: an RDB URL (postgresql://…, mysql://…) "
            "or a journal file path that every worker can reach"
        )
    return str(database.resolve().parent / JOURNAL_FILE)


def open_storage(storage: str) -> "str | optuna.storages.BaseStorage":
    """A journal file for a path (the storage Optuna makes for several processes on one machine); for an RDB URL, a
    storage holding one database connection at most.

    Why one: every worker of every node opens its own storage and asks and tells through it, and a database server
    takes a bounded number of connections (PostgreSQL: 100 by default). SQLAlchemy's default pool lets a process
    hold up to 15; a worker asks or tells one thing at a time, so one suffices, and a study's connections are then
    its workers plus the driver's. (Optuna's gRPC storage proxy would bring it to one, at the price of a server
    process the driver must keep up and every node must reach; a run of a few hundred workers does not need it.)"""
    import optuna

    if storage.startswith(("sqlite:", "sqlite+")):
        return storage
    if "://" in storage:
        return optuna.storages.RDBStorage(storage, engine_kwargs={"pool_size": 1, "max_overflow": 0,
                                                                  "pool_pre_ping": True})
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
