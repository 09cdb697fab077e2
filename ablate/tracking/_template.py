"""A new SQLite store in milliseconds: a copy of the empty store MLflow's first use builds, kept once per machine.

MLflow builds a new store by running every schema migration of its history, one by one: some five seconds, the
longest step before a first study's first trial. The result is the same file every time for one MLflow version
(tables, indices and the schema revision; no experiment, which MLflow adds when a client first opens the store),
so the first store ablate builds is kept in the user's cache folder, named by MLflow's version and schema
revision, and every later new store starts as a copy of it. A copy whose revision is not the one this MLflow
expects, or that cannot be read, is never used: the store is then built by the migrations, as without a copy.
ABLATE_STORE_TEMPLATES=0 turns the copies off.

May import: the standard library; MLflow's version is the caller's to give.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

TEMPLATES_ENV = "ABLATE_STORE_TEMPLATES"


def template_path(mlflow_version: str, revision: str) -> Path | None:
    """Where the empty store of this MLflow version and schema revision is kept; None: copies are turned off."""
    if os.environ.get(TEMPLATES_ENV, "1") == "0":
        return None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ablate" / f"mlflow-{mlflow_version}-{revision}.db"


def copy_template(template: Path | None, target: Path, revision: str) -> bool:
    """Make `target` a copy of the kept empty store; False (and no `target`) when there is none fit to copy."""
    if template is None or not template.exists() or schema_revision(template) != revision:
        return False
    try:
        _backup(template, target)
        if schema_revision(target) == revision:
            return True
    except (sqlite3.Error, OSError):
        pass
    with contextlib.suppress(OSError):
        target.unlink()
    return False


def keep_template(store: Path, template: Path | None) -> None:
    """Keep a copy of `store`, an empty store the migrations just built, for later new stores. Written beside the
    kept copy and renamed over it, so a reader never sees half of one; a cache folder that cannot be written only
    means no copy."""
    if template is None:
        return
    partial = template.with_name(f".{template.name}.{os.getpid()}")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        _backup(store, partial)
        os.replace(partial, template)
    except (sqlite3.Error, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


def schema_revision(path: Path) -> str | None:
    """The store's schema revision, read without MLflow; None when it has none (yet), or is no database."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return rows[0][0] if rows else None


def _backup(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (SQLite's own backup, not a byte copy of a file being written)."""
    with contextlib.closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)) as reader, \
            contextlib.closing(sqlite3.connect(target)) as writer:
        reader.backup(writer)
