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
    """An RDB URL as is; anything else is a journal file path (the storage Optuna makes for several processes on one
    machine)."""
    import optuna

    if "://" in storage:
        return storage
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
