"""A new SQLite store as a copy of the empty store MLflow's migrations built once (ablate.tracking's _template)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow
import pytest

from ablate.tracking import Tracker
from ablate.tracking._template import TEMPLATES_ENV, schema_revision


def _dump(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def _schema(path: Path) -> dict:
    """Each table's columns, indices and rows (experiments' rows aside), in an order of their own."""
    connection = sqlite3.connect(path)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = {}
        for table in tables:
            indices = sorted((name, unique, tuple(c[2] for c in connection.execute(f'PRAGMA index_info("{name}")')))
                             for _, name, unique, *_ in connection.execute(f'PRAGMA index_list("{table}")'))
            rows = [] if table == "experiments" else sorted(map(repr, connection.execute(f'SELECT * FROM "{table}"')))
            found[table] = (sorted(connection.execute(f'PRAGMA table_info("{table}")')), indices, rows)
        return found
    finally:
        connection.close()


def _templates(cache: Path) -> list[Path]:
    return sorted((cache / "ablate").glob("mlflow-*.db"))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache folder of this test's own, empty: the first new store is built by the migrations."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


def _new_store(path: Path) -> Path:
    Tracker(f"sqlite:///{path}")  # its first use builds it
    return path


def test_the_second_new_store_is_a_copy_of_the_first_and_the_same_store(tmp_path, cache, monkeypatch):
    built = tmp_path / "built.db"
    monkeypatch.setenv(TEMPLATES_ENV, "0")  # a store of MLflow's migrations alone: the yardstick
    _new_store(built)
    assert not _templates(cache)
    monkeypatch.delenv(TEMPLATES_ENV)
    first = _new_store(tmp_path / "first.db")
    (template,) = _templates(cache)
    assert template.name == f"mlflow-{mlflow.__version__}-{schema_revision(first)}.db"
    template_dump = _dump(template)
    second = _new_store(tmp_path / "second.db")
    # A copy is the kept store to the byte (the default experiment aside, which MLflow's first open adds, with its
    # own creation time and artifact folder); and it has the tables, columns, indices and rows of a store the
    # migrations built (two runs of the migrations write some constraints and indices in another order).
    assert [line for line in _dump(second) if not line.startswith('INSERT INTO "experiments"')] == template_dump
    assert _schema(second) == _schema(built) == _schema(first)
    assert not any(line.startswith('INSERT INTO "experiments"') for line in template_dump)  # no experiment kept
    assert Tracker(f"sqlite:///{second}").experiment("tiny")
    assert not list(tmp_path.glob(".*.creating"))


def test_a_kept_copy_of_another_schema_is_not_used(tmp_path, cache):
    first = _new_store(tmp_path / "first.db")
    (template,) = _templates(cache)
    connection = sqlite3.connect(template)
    connection.execute("UPDATE alembic_version SET version_num = 'older'")
    connection.commit()
    connection.close()
    second = _new_store(tmp_path / "second.db")  # built by the migrations, and the copy kept again
    assert schema_revision(second) == schema_revision(first) != "older"
    assert schema_revision(template) == schema_revision(first)


def test_an_unwritable_cache_only_means_no_copy(tmp_path, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    store = _new_store(tmp_path / "store.db")
    assert schema_revision(store) and Tracker(f"sqlite:///{store}").experiment("tiny")
