"""Which claims database a study's invocations share, and how it is named (ablate.tracking._claims is the protocol).

Owns the choice every invocation of a study must make alike (see the assumptions in _claims.py): the database named
by --claims or $ABLATE_CLAIMS, else one derived from the tracking store (`claims_url`); the scope of a study within
it (`scope_of`); and the database as a person reads it, without a password (`claims_label`). SQLAlchemy is
imported only on first use.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import quote

from ablate.tracking._tags import sqlite_path

CLAIMS_ENV = "ABLATE_CLAIMS"  # the claims database, when not --claims

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")


def claims_url(tracking_uri: str, claims: str | None = None, storage: str | None = None) -> str:
    """The claims database of a store (see the assumptions in _claims.py), in this order:
    - `claims` (--claims) or $ABLATE_CLAIMS;
    - a SQLite store `…/NAME.db`: `…/NAME.claims.db` beside it, on the same disk as the store;
    - a database store (postgresql://, mysql://…): that database, in tables of its own;
    - a server store (http://…): the search's Optuna storage when it is a database URL; else, on this machine
      alone, a file under ~/.local/state/ablate keyed by the store's URI. Invocations on other machines cannot see
      it: a Ray cluster of several nodes refuses a SQLite claims file (ablate.run's ray_slots)."""
    chosen = claims or os.environ.get(CLAIMS_ENV)
    if chosen:
        return chosen
    database = sqlite_path(tracking_uri)
    if database is not None:  # escaped as sqlite_path reads it back
        return f"sqlite:///{quote(str(database.resolve().with_suffix('.claims.db')), safe='/')}"
    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0]
    if scheme in DATABASE_SCHEMES:
        return tracking_uri
    if storage and "://" in storage:
        return storage
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "ablate" / "claims"
    state.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
    return f"sqlite:///{state / f'{digest}.db'}"


def scope_of(experiment_id: str, creation_time: int | None) -> str:
    """A study's claims scope: its experiment, told apart from a same-numbered one of another store by when it was
    made (a claims database named by hand may serve several stores)."""
    return f"{experiment_id}@{creation_time or 0}"


def claims_label(url: str) -> str:
    """The database as a person reads it, without a password."""
    path = sqlite_path(url)
    if path is not None:
        return str(path.resolve())
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url
