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


def open_storage(storage: str) -> str | optuna.storages.BaseStorage:
    """A journal file for a path (the storage Optuna makes for several processes on one machine); for an RDB URL, a
    storage that holds no connection between two calls.

    Why: every worker of every node opens its own storage, and a database server takes a bounded number of
    connections (PostgreSQL: 100 by default). SQLAlchemy's default pool keeps up to 5 open per process and lets 15
    be; without a pool (NullPool) a worker holds a connection only while it asks or tells, a few times a trial, so
    a study's connections at any moment are the workers talking to it then — the cost is a connection opened per
    call, nothing next to a trial's training. (Optuna's gRPC storage proxy would bring them to one, at the price of a
    server process the driver must keep up and every node must reach; a few hundred workers do not need it.)"""
    import optuna

    if storage.startswith(("sqlite:", "sqlite+")):
        return storage
    if "://" in storage:
        from sqlalchemy.pool import NullPool

        return optuna.storages.RDBStorage(storage, engine_kwargs={"poolclass": NullPool})
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
