"""What the tracking store already holds for a study, read without importing MLflow.

`ablate plan` shows each trial's status against the store and must stay fast, so for the
default SQLite store it reads MLflow's tables directly (read-only); other stores go through
MLflow's client.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ablate.tracking._tags import ROLE, TRIAL_HASH, sqlite_path


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
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            return connection.execute(query, (TRIAL_HASH, study)).fetchall()
    except sqlite3.DatabaseError:  # not (yet) an MLflow store: nothing recorded
        return []


def _client_rows(uri: str, study: str) -> list[tuple[str, str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.{ROLE} = 'trial'", max_results=50_000)
    runs = sorted(runs, key=lambda r: r.info.start_time)
    return [(r.data.tags.get(TRIAL_HASH, ""), r.info.status) for r in runs]
