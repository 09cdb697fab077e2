"""Opening the MLflow store, and turning its failures into one clear message (StoreError, exit 3).

Three things go wrong with a store in practice, and each used to end in a raw traceback:
- First use races. MLflow creates and migrates a new SQLite store's tables the first time a
  client opens it, with no lock: two processes opening one new file at once (a second
  `ablate run`, `mlflow ui`, a notebook) collide ("table _alembic_tmp_experiments already
  exists"), and a first use cut short (Ctrl-C, a full disk) leaves a half-built store. ablate
  builds a new store in a private file and links it into place only when complete (link, not
  rename: an existing store is never replaced), and retries an open that met someone else's
  migration halfway until it is done.
- The store breaks mid-study: a full disk, a read-only file, a server that went away. Every
  MLflow call goes through `GuardedClient`, which raises StoreError naming the store and what
  to do; the worker stops on it rather than dying and being restarted.
- The server is unreachable: MLflow retries an HTTP request for minutes by default; the
  first probe of a server store fails fast instead.
- Ctrl-C or SIGTERM lands inside a call. Cut halfway through a query, a call to a database
  store leaves the query's statement open, referenced by the exception's traceback: SQLite
  then keeps a lock on the whole file while the interrupted process records its interruption,
  and every writer, that process included, fails with "database is locked" after MLflow's 20 s
  busy timeout (the runs stay RUNNING). So a database store's call is never cut: a signal that
  comes during it is delivered as soon as it returns (`signals_held`). A server store's call
  holds no lock and may hang for minutes: Ctrl-C still cuts it.
- MLflow logs a failure before it raises it: a full disk printed some 90 lines of MLflow's and SQLAlchemy's own
  ERROR records, tracebacks included, from the parent and every worker, before ablate's one line. Their loggers
  keep every record except those of a store failure ablate reports itself (`quiet_reported_failures`); --debug
  (ABLATE_DEBUG=1, which workers inherit) shows them all.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablate.errors import StoreError
from ablate.tracking._handlers import restore_signal_handlers
from ablate.tracking._store import store_label
from ablate.tracking._tags import sqlite_path
from ablate.tracking._template import copy_template, keep_template, schema_revision, template_path
from ablate.tracking._uri import check_tracking_uri

DEBUG_ENV = "ABLATE_DEBUG"  # set by `ablate --debug`: every log record of MLflow's is shown (see the docstring)

RACE_SECONDS = 60.0  # how long an open waits for another process's first-use migration to finish
QUIET_SECONDS = 15.0  # a store being set up is written to at least this often, even on a busy machine
# (Not "out-of-date database schema": a store being set up is waited for before it is opened, so that message means
# a store of an older MLflow, which store_failure says how to upgrade.)
_RACE_SIGNS = ("already exists", "duplicate column", "database is locked", "no such table", "alembic_version")


def open_client(uri: str) -> MlflowClient:
    """A client on the store, created complete if new; StoreError when it cannot be used."""
    check_tracking_uri(uri)
    path = sqlite_path(uri)
    if path is not None and path.is_symlink():  # a store linked from elsewhere is made (and linked to) at its target
        path = path.resolve()
    with guarded(uri), _driver_named(uri):
        if path is not None:
            if not path.exists():
                _create_sqlite_store(path)
            _wait_for_another_setup(path)  # ours is complete at once; one another program made first may not be
        if uri.startswith(("http://", "https://")):
            _probe_server(uri)
        return _open_waiting_out_races(uri)


@contextlib.contextmanager
def _driver_named(uri: str) -> Iterator[None]:
    """A database driver SQLAlchemy needs and cannot import: which one, and how to install it."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise StoreError(f"tracking store {store_label(uri)}: the database driver '{exc.name}' is not installed "
                         f"(pip install {exc.name}), or pass another --tracking-uri") from exc


def _create_sqlite_store(path: Path) -> None:
    """Build a new store's tables in a private file — a copy of the empty store kept from an earlier build
    (ablate.tracking's _template), else by MLflow's migrations — then link it into place: the store appears
    complete or not at all, and one that appeared meanwhile (another process won) is kept."""
    import mlflow
    from mlflow.store.db.utils import _get_latest_schema_revision

    private = path.resolve().parent / f".{path.name}.{os.getpid()}.creating"
    head = _get_latest_schema_revision()
    template = template_path(mlflow.__version__, head)
    try:
        if not copy_template(template, private, head):
            _migrate(private)
            keep_template(private, template)
        try:
            os.link(private, path)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links (some network and FUSE mounts): move it, if still free
            if not path.exists():
                os.replace(private, path)  # a racer in the instant between could only have placed an empty store
    finally:
        with contextlib.suppress(FileNotFoundError):
            private.unlink()


def _migrate(database: Path) -> None:
    """MLflow's own build of a new store's tables: every schema migration, as `mlflow db upgrade` and first use run
    them."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    engine = sqlalchemy.create_engine(sqlalchemy.engine.URL.create("sqlite", database=str(database)))
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def _wait_for_another_setup(path: Path) -> None:
    """Another program (`mlflow ui`, a notebook) may be setting up this store right now: opening it meanwhile would
    run a second setup beside its own, and make *it* fail. Wait while the store is incomplete and being written."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    head = _get_latest_schema_revision()
    deadline = time.monotonic() + RACE_SECONDS
    while schema_revision(path) != head and time.monotonic() < deadline:
        try:
            if time.time() - path.stat().st_mtime > QUIET_SECONDS:
                return  # nobody is writing it: an older MLflow's store, or a setup that was cut short
        except FileNotFoundError:
            return
        time.sleep(0.2)


def _open_waiting_out_races(uri: str) -> MlflowClient:
    deadline = time.monotonic() + RACE_SECONDS
    while True:
        try:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
            return client
        except Exception as exc:  # noqa: BLE001 — sorted below: a race is waited out, anything else is raised
            if not _is_race(exc):
                raise
            if time.monotonic() > deadline:
                raise StoreError(f"tracking store {store_label(uri)} is only half set up (MLflow's first-use setup "
                                 "was cut short, or another program keeps changing it): move it away to start a new "
                                 "store; ablate did not touch it") from exc
            time.sleep(0.5)


def _is_race(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(sign in text for sign in _RACE_SIGNS)


def _probe_server(uri: str) -> None:
    """One quick request: an unreachable server is said so in seconds, not after MLflow's minutes of retries."""
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=10)
    except requests.RequestException as exc:
        raise StoreError(f"cannot reach the tracking server {uri} ({type(exc).__name__}): start it (mlflow server "
                         "--host … --port …) or check --tracking-uri; nothing was recorded") from exc


# -- failures -------------------------------------------------------------------------

def store_failure(exc: BaseException, uri: str) -> StoreError | None:
    """The StoreError a failed store call means, or None when the error is not the store's (a missing run, …)."""
    if isinstance(exc, StoreError):
        return exc
    where = store_label(uri)
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "disk is full" in text or "no space left" in text:
        return StoreError(f"the disk holding the tracking store {where} is full: free some space and run the same "
                          "command again; what is recorded is kept, the trials in flight are retried")
    if code in (errno.EROFS, errno.EACCES) or "readonly database" in text or "read-only" in text:
        return StoreError(f"tracking store {where} became read-only: make it (and its folder) writable and run the "
                          "same command again")
    if "file is not a database" in text or "malformed" in text:
        return StoreError(f"tracking store {where} is damaged ({exc}): restore it from a backup, or move it away to "
                          "start a new one")
    if "out-of-date database schema" in text:
        return StoreError(f"tracking store {where} was written by an older MLflow: back it up, then run "
                          f"`mlflow db upgrade {uri}`")
    if _unreachable(exc):
        return StoreError(f"the tracking server {where} stopped answering ({type(exc).__name__}): check it and run "
                          "the same command again to resume")
    if isinstance(exc, OSError) or (isinstance(exc, MlflowException) and exc.error_code in (
            "TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR")):
        return StoreError(f"the tracking store {where} failed: {str(exc).splitlines()[0][:300]}")
    return None


def _unreachable(exc: BaseException) -> bool:
    try:
        import requests
    except ImportError:
        return False
    text = str(exc)
    return isinstance(exc, requests.RequestException) or "Max retries exceeded" in text or "API request to" in text


class _ReportedByAblate(logging.Filter):
    """Drops a log record of MLflow's, alembic's or SQLAlchemy's that carries a store failure: MLflow logs it (with
    its traceback) and raises it, and ablate reports it as one StoreError line. Every other record passes, and all
    of them under --debug."""

    PREFIXES = ("mlflow", "alembic", "sqlalchemy")

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get(DEBUG_ENV) or not record.name.startswith(self.PREFIXES) or not record.exc_info:
            return True
        return not _reported(record.exc_info[1])


def _reported(exc: BaseException | None) -> bool:
    """A store failure ablate reports: store_failure names it, or it is a database's OperationalError (a full disk,
    a lock, a lost connection), which MLflow re-raises as TEMPORARILY_UNAVAILABLE for GuardedClient to report."""
    if exc is None:
        return False
    if type(exc).__name__ == "OperationalError" and type(exc).__module__.startswith(("sqlalchemy", "sqlite3")):
        return True
    try:
        return store_failure(exc, "") is not None
    except Exception:  # noqa: BLE001 — a filter must never raise
        return False


_QUIET = _ReportedByAblate()


def quiet_reported_failures() -> None:
    """Put the filter on the handlers MLflow gives its, alembic's and SQLAlchemy's loggers, on the logger that logs
    a failed database call, and on logging's last resort (what prints a record no handler takes). Idempotent."""
    handlers = [h for name in ("mlflow", "alembic", "sqlalchemy", "sqlalchemy.engine", "huey")
                for h in logging.getLogger(name).handlers]
    for target in [*handlers, logging.getLogger("mlflow.store.db.utils"), logging.lastResort]:
        if target is not None and _QUIET not in target.filters:
            target.addFilter(_QUIET)


quiet_reported_failures()  # MLflow configured its loggers when it was imported, above


@contextlib.contextmanager
def guarded(uri: str) -> Iterator[None]:
    """Store failures raised inside become StoreError (see store_failure); everything else passes unchanged."""
    try:
        yield
    except Exception as exc:
        failure = store_failure(exc, uri)
        if failure is None or failure is exc:
            raise
        raise failure from exc


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them, in order, to the handlers the block began
    with: whatever they raise is raised where the block ends, never inside it. Held at the Python level (a mask
    would not do: another thread may take the signal), and in the main thread only, the only one that signals
    interrupt; a signal that is ignored stays ignored. Blocks nest."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: object) -> None:
        received.append(signum)

    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if handler is not None and handler != signal.SIG_IGN:  # None: a handler not set from Python, left alone
                previous[sig] = handler  # first: a swap cut short (see restore_signal_handlers) is undone all the same
                signal.signal(sig, hold)
        yield
    finally:
        raised = restore_signal_handlers(previous)
        for signum in received:  # each one: a second Ctrl-C is news to the parent's handler (ablate.run's signals)
            try:
                signal.raise_signal(signum)
            except BaseException as exc:  # noqa: BLE001 — raised below, once every held signal is delivered
                raised = raised or exc
        if raised is not None:
            raise raised


class GuardedClient:
    """An MlflowClient whose every method raises StoreError for a store failure (see store_failure), and whose
    calls to a database store a signal does not cut halfway (see the module docstring)."""

    def __init__(self, client: MlflowClient, uri: str):
        self._client, self._uri = client, uri
        self._whole = signals_held if not uri.startswith(("http://", "https://")) else contextlib.nullcontext

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute
        return self._guard(attribute)

    def _guard(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with guarded(self._uri), self._whole():
                return method(*args, **kwargs)

        return call
