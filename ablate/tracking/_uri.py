"""A tracking URI checked before anything is created or MLflow is imported: one line naming what is wrong with it.

MLflow accepts these stores (mlflow.tracking._tracking_service.utils, MLflow 3.x): a database through SQLAlchemy
(`sqlite`, `postgresql`, `mysql`, `mssql`, each optionally `+driver`), a tracking server (`http`, `https`),
Databricks (`databricks`, `databricks-uc`, `uc`), and the file store (a plain path or `file:`), which MLflow 3
refuses unless MLFLOW_ALLOW_FILE_STORE=true. Anything else used to end in a traceback from deep inside MLflow, after
`ablate run` had already printed its header; `postgres://` (SQLAlchemy dropped that spelling) and a database driver
that is not installed likewise.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import urlparse

from ablate.errors import StoreError
from ablate.tracking._tags import sqlite_path

DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
SERVERS = ("http", "https")
DATABRICKS = ("databricks", "databricks-uc", "uc")
SCHEMES = (*DATABASES, *SERVERS, *DATABRICKS, "file")  # what --tracking-uri accepts, in the order messages list them

# The module SQLAlchemy imports for a database URI's dialect[+driver] (its defaults where no driver is named).
_DRIVERS = {
    "postgresql": "psycopg2", "postgresql+psycopg2": "psycopg2", "postgresql+psycopg": "psycopg",
    "postgresql+pg8000": "pg8000", "mysql": "MySQLdb", "mysql+mysqldb": "MySQLdb", "mysql+pymysql": "pymysql",
    "mysql+mysqlconnector": "mysql.connector", "mssql": "pyodbc", "mssql+pyodbc": "pyodbc", "mssql+pymssql": "pymssql",
}
_PACKAGES = {"psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "mysql.connector": "mysql-connector-python"}


def check_tracking_uri(uri: str, flag: str = "--tracking-uri") -> None:
    """StoreError (exit 3) for a tracking URI no MLflow store can open, said before anything is created."""
    if not uri.strip():
        raise StoreError(f"{flag} is empty: pass a store such as sqlite:///mlflow.db, or leave it out")
    if uri in DATABRICKS:  # MLflow reads these bare names as their schemes
        return
    scheme = urlparse(uri).scheme.lower()
    if len(scheme) == 1 and scheme.isalpha():  # a Windows drive letter: a path, as MLflow reads it
        scheme = ""
    dialect = scheme.split("+", 1)[0]
    shown = uri if len(uri) <= 200 else uri[:200] + "…"
    written = uri[: len(scheme)]
    if scheme and written != scheme:  # urllib reads Sqlite:// as sqlite://, SQLAlchemy does not
        raise StoreError(f"{flag} {shown}: write the scheme in lower case: {scheme}{uri[len(scheme):]}")
    if scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
            raise StoreError(f"{flag} {shown}: a folder (MLflow's file store) is refused by MLflow 3 unless "
                             "MLFLOW_ALLOW_FILE_STORE=true; pass a database such as sqlite:///mlflow.db (the default)")
        return
    if dialect == "postgres":
        raise StoreError(f"{flag} {shown}: write postgresql://…, the scheme SQLAlchemy and MLflow accept")
    if dialect not in DATABASES and scheme not in SERVERS + DATABRICKS:
        raise StoreError(f"{flag} {shown}: unknown scheme '{scheme}'; MLflow stores are "
                         f"{', '.join(s + '://' for s in SCHEMES)} (e.g. sqlite:///mlflow.db, the default)")
    if scheme.count("+") > 1:
        raise StoreError(f"{flag} {shown}: a database URI is dialect+driver://…, one '+' at most")
    parsed = urlparse(uri)
    if dialect == "sqlite":
        _check_sqlite(uri, parsed.netloc, flag, shown)
    elif scheme in SERVERS and not parsed.hostname:
        raise StoreError(f"{flag} {shown}: names no server; write {scheme}://HOST:PORT")
    elif dialect in DATABASES:
        _check_driver(scheme, flag, shown)


def _check_sqlite(uri: str, host: str, flag: str, shown: str) -> None:
    if host:
        raise StoreError(f"{flag} {shown}: an SQLite URI has no host; write sqlite:///relative/mlflow.db or "
                         "sqlite:////absolute/path/mlflow.db")
    path = sqlite_path(uri)
    if path is None:
        raise StoreError(f"{flag} {shown}: an in-memory SQLite store keeps nothing; name a file, such as "
                         "sqlite:///mlflow.db")
    if symlink_loops(path):
        raise StoreError(f"tracking store {path}: is a symbolic link that loops back on itself: point it at a file "
                         "or remove it, or pass another --tracking-uri")


def symlink_loops(path: Path) -> bool:
    """A path that is a symbolic link leading in circles, which resolving (RuntimeError on 3.11, OSError ELOOP
    later) or opening (OSError ELOOP) raises on: ablate checks the paths it writes for it first."""
    try:
        path.resolve(strict=False)
    except (RuntimeError, OSError):
        return True
    return False


def _check_driver(scheme: str, flag: str, shown: str) -> None:
    module = _DRIVERS.get(scheme)
    if module is None:  # a driver we do not know: SQLAlchemy says whether it exists when MLflow opens the store
        return
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise StoreError(f"{flag} {shown}: its database driver '{module}' is not installed: pip install "
                         f"{_PACKAGES.get(module, module)}")
