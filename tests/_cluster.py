"""Real cluster components on localhost for tests: a throwaway PostgreSQL, an MLflow tracking server on it, and a
multi-node Ray cluster on one machine.

Each component is a context manager (a plain generator function, usable from a pytest fixture with ``with``/
``yield``) that

* starts real processes, each in its own process group (``start_new_session=True``), so that stopping it is a
  signal to that group and to the processes recorded as its descendants, by process id: never ``ray stop``,
  ``pkill`` or anything else that kills by name, which would take down other people's processes on a shared host;
* waits for the component to be usable, bounded in time, and raises :class:`ComponentStartError` with the tail of
  the component's own log when it is not, instead of hanging a test run;
* stops everything in a ``finally``, SIGTERM first, SIGKILL after a bounded wait, then removes its temp folder.

Every port is chosen explicitly (a free one, below the kernel's ephemeral range) instead of left to defaults:
two of these clusters, or a head and a worker of one Ray cluster, share one host, and default ports (Ray's 6379,
8265, 10001, ..., PostgreSQL's 5432, MLflow's 5000) would collide with each other and with whatever else runs here.

Nothing here imports pytest except the skip helpers, so the functions also serve scripts and benchmarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib.util
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Self

#: Where the component folders go. Short on purpose (Unix socket paths are limited to 107 bytes, and Ray's socket
#: paths below its temp dir are long); and not under pytest's tmp_path, which lives in /tmp/pytest-of-<user>, a
#: mode-0700 folder that the ``postgres`` user cannot traverse when tests run as root.
TMP_ROOT = "/tmp"

#: Ports are drawn from here: below Linux's default ephemeral range (32768-60999), so that no outgoing connection
#: of some other process grabs one of ours between our check and the server's bind.
PORT_RANGE = (20000, 32000)

PG_USER = "postgres"  # the OS user that runs PostgreSQL when we are root (PostgreSQL refuses to run as root)
DB_ROLE = "ablate"
DB_PASSWORD = "ablate"


class ComponentStartError(RuntimeError):
    """A component did not come up in time; the message carries the tail of its log."""


# --------------------------------------------------------------------------------------------------------------
# skip helpers


def _which(name: str) -> str | None:
    """An executable on PATH, or in Debian's versioned PostgreSQL folders (which are not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def skip_unless_cluster_components(*, postgres: bool = True, mlflow: bool = True, ray: bool = True) -> str | None:
    """Why the named components cannot run here (a reason for ``pytest.skip``), or None if they can.

    Checks only what this module needs to start them: the Python packages, the PostgreSQL binaries, and, when we
    are root, the ``postgres`` OS user to run them as.
    """
    missing: list[str] = []
    if postgres or mlflow:
        if importlib.util.find_spec("psycopg") is None:
            missing.append("python package psycopg (pip install 'psycopg[binary]')")
        for binary in ("initdb", "pg_ctl", "postgres"):
            if _which(binary) is None:
                missing.append(f"PostgreSQL binary {binary!r}")
        if os.geteuid() == 0 and not _user_exists(PG_USER):
            missing.append(f"OS user {PG_USER!r} (PostgreSQL refuses to run as root)")
    if mlflow and importlib.util.find_spec("mlflow") is None:
        missing.append("python package mlflow")
    if ray and importlib.util.find_spec("ray") is None:
        missing.append("python package ray (pip install 'ray')")
    return "cluster components unavailable: " + "; ".join(missing) if missing else None


def require_cluster_components(**which: bool) -> None:
    """``pytest.skip`` (the only use of pytest in this module) unless :func:`skip_unless_cluster_components` is
    satisfied; ``which`` as there."""
    reason = skip_unless_cluster_components(**which)
    if reason:
        import pytest

        pytest.skip(reason)


# --------------------------------------------------------------------------------------------------------------
# ports


_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    """Whether nobody listens on `port`, on the loopback or on any interface (Ray binds 0.0.0.0)."""
    for host in ("127.0.0.1", "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_ports(count: int = 1, *, consecutive: bool = False) -> list[int]:
    """`count` free ports (consecutive ones if asked: Ray's worker port range), never the same one twice in this
    process. A port is free when it can be bound now; the server that gets it binds it a moment later, and drawing
    at random from a range outside the ephemeral one keeps that race unlikely."""
    low, high = PORT_RANGE
    for _ in range(2000):
        if consecutive:
            base = random.randrange(low, high - count)
            ports = list(range(base, base + count))
        else:
            ports = random.sample(range(low, high), count)
        if not _handed_out.intersection(ports) and all(_bindable(p) for p in ports):
            _handed_out.update(ports)
            return ports
    raise ComponentStartError(f"no {count} free ports in {PORT_RANGE}")


def free_port() -> int:
    return free_ports(1)[0]


# --------------------------------------------------------------------------------------------------------------
# processes: started in their own group, stopped by id


def _proc_stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, process group, state) of `pid`, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name, in parentheses, may contain spaces
    return int(fields[1]), int(fields[2]), fields[0]


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[2] not in ("Z", "X")  # a zombie has exited; it only waits to be reaped


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, from /proc (no psutil here). Recorded before a stop, so that processes that
    left the process group (PostgreSQL backends call setsid; Ray may give workers their own group) are still
    stopped by their ids."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [p for p in found if _alive(p)]


def group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[1] == pgid and stat[2] not in ("Z", "X"):
                members.append(int(entry))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: Sequence[int], timeout: float, proc: subprocess.Popen | None = None) -> list[int]:
    """Wait until none of `pids` is alive (reaping `proc`, our own child); return those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)
        left = [p for p in pids if _alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def stop_process_tree(
    proc: subprocess.Popen,
    *,
    term_timeout: float = 10.0,
    kill_timeout: float = 10.0,
    first_signal: int = signal.SIGTERM,
    group_signal: bool = True,
) -> list[int]:
    """Stop `proc` (started with ``start_new_session=True``), its process group and its recorded descendants:
    `first_signal` (to the group, or only to `proc` if not `group_signal`), a bounded wait, then SIGKILL to the
    group and to every recorded pid. Returns the pids that had to be SIGKILLed (for reporting)."""
    pgid = proc.pid
    tree = sorted({proc.pid, *descendants(proc.pid), *group_members(pgid)})
    if group_signal:
        _signal_group(pgid, first_signal)
    else:
        _signal_pids([proc.pid], first_signal)
    _wait_gone(tree, term_timeout, proc)
    tree = sorted(set(tree) | set(group_members(pgid)))  # anything forked meanwhile
    left = [p for p in tree if _alive(p)]
    if left:
        _signal_group(pgid, signal.SIGKILL)
        _signal_pids(left, signal.SIGKILL)
        still = _wait_gone(left, kill_timeout, proc)
        if still:
            raise RuntimeError(f"processes {still} survived SIGKILL")
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=kill_timeout)
    return left


def rss_mb(pids: Sequence[int]) -> float:
    """Resident memory of `pids` together, in MiB (shared pages counted once per process: an upper bound)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def _tail(path: str | Path, chars: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - chars))
            return f.read().decode(errors="replace")
    except OSError as e:
        return f"<no log at {path}: {e}>"


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a component: ours without the variables that would point it at another cluster."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER")
    }
    env.update(extra or {})
    return env


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (the venv's `ray`), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise ComponentStartError(f"no {name!r} executable next to {sys.executable} or on PATH")
    return found


def _mkdtemp(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir=TMP_ROOT)


# --------------------------------------------------------------------------------------------------------------
# PostgreSQL


@dataclasses.dataclass
class PostgresServer:
    """A running throwaway PostgreSQL cluster. `role`/`password` own every database in `databases`."""

    host: str
    port: int
    role: str
    password: str
    databases: tuple[str, ...]
    data_dir: str
    socket_dir: str
    log_path: str
    pid: int

    def url(self, db: str) -> str:
        """SQLAlchemy URL (MLflow's --backend-store-uri, Optuna's RDBStorage): the psycopg 3 driver."""
        return f"postgresql+psycopg://{self.role}:{self.password}@{self.host}:{self.port}/{db}"

    def dsn(self, db: str) -> str:
        """libpq URL, for ``psycopg.connect``."""
        return f"postgresql://{self.role}:{self.password}@{self.host}:{self.port}/{db}"

    def connect(self, db: str, **kwargs):
        """A psycopg connection as the `role`, over TCP with its password (what MLflow and Optuna do)."""
        import psycopg

        return psycopg.connect(self.dsn(db), connect_timeout=5, **kwargs)


def _pg_identity() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as: the ``postgres`` user when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        raise ComponentStartError(
            f"running as root and there is no {PG_USER!r} user: PostgreSQL refuses root"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _as_pg_user(ident: tuple[int, int] | None) -> dict:
    """Popen arguments that run a child as the postgres user (no runuser/su wrapper: the child's pid is the
    server's pid, and it has no supplementary groups of root's)."""
    if ident is None:
        return {}
    return {"user": ident[0], "group": ident[1], "extra_groups": []}


def _chown_tree(path: str, ident: tuple[int, int] | None) -> None:
    if ident is None:
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, *ident)


@contextlib.contextmanager
def postgres_server(
    tmp_path: str | Path | None = None, *, databases: Sequence[str] = ("mlflow", "optuna"), start_timeout: float = 60.0
) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port> with role ``ablate`` (password ``ablate``) owning
    `databases`; yields a :class:`PostgresServer` (``.url(db)`` for SQLAlchemy, ``.dsn(db)`` for psycopg).

    The cluster lives in a fresh ``/tmp/ablate-pg-*`` folder owned by the postgres user, not in `tmp_path`: as root
    pytest's tmp_path is under a mode-0700 root folder that the postgres user cannot enter (and initdb refuses
    root). `tmp_path`, if given, receives a copy of the server log at the end.

    The server is ``postgres -D`` itself, launched directly in its own process group (so the pid we hold is the
    postmaster, not a pg_ctl or runuser wrapper); it listens on TCP 127.0.0.1 only and on a Unix socket in the
    cluster folder (``-k``), never in /var/run/postgresql where a system server may live. Durability is off
    (fsync, synchronous_commit): the data is thrown away. Local socket connections are trusted (how we create the
    role and databases, as superuser ``postgres``); TCP needs the role's password (scram-sha-256), as MLflow and
    Optuna will use it.

    Stop: SIGQUIT to the postmaster (what ``pg_ctl stop -m immediate`` sends), then SIGKILL to its group and to its
    recorded children (backends call setsid, so they are not in the group), then the folder is removed.
    """
    import psycopg

    ident = _pg_identity()
    initdb, postgres = _which("initdb"), _which("postgres")
    if not initdb or not postgres:
        raise ComponentStartError("PostgreSQL binaries initdb/postgres not found")
    base = _mkdtemp("ablate-pg-")
    os.chmod(base, 0o700)
    data_dir, socket_dir, log_path = f"{base}/data", f"{base}/s", f"{base}/postgres.log"
    os.mkdir(socket_dir, 0o700)
    _chown_tree(base, ident)
    proc: subprocess.Popen | None = None
    try:
        started = time.monotonic()
        init = subprocess.run(
            [
                initdb,
                "-D",
                data_dir,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=base,
            env=_clean_env({"LC_ALL": "C"}),
            capture_output=True,
            text=True,
            timeout=start_timeout,
            check=False,
            **_as_pg_user(ident),
        )
        if init.returncode != 0:
            raise ComponentStartError(
                f"initdb failed ({init.returncode}):\n{init.stdout[-3000:]}\n{init.stderr[-3000:]}"
            )
        port = free_port()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [
                    postgres,
                    "-D",
                    data_dir,
                    "-p",
                    str(port),
                    "-k",
                    socket_dir,
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "shared_buffers=32MB",
                    "-c",
                    "max_connections=100",
                ],
                cwd=base,
                env=_clean_env({"LC_ALL": "C"}),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_as_pg_user(ident),
            )
        deadline = started + start_timeout
        while True:
            if proc.poll() is not None:
                raise ComponentStartError(
                    f"postgres exited with {proc.returncode} while starting; log:\n{_tail(log_path)}"
                )
            try:
                admin = psycopg.connect(
                    host=socket_dir, port=port, user="postgres", dbname="postgres", connect_timeout=2, autocommit=True
                )
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise ComponentStartError(
                        f"postgres not accepting connections after {start_timeout:.0f}s; log:\n{_tail(log_path)}"
                    ) from None
                time.sleep(0.2)
        with admin:
            admin.execute(f"CREATE ROLE {DB_ROLE} LOGIN PASSWORD '{DB_PASSWORD}'")
            for db in databases:
                admin.execute(f'CREATE DATABASE "{db}" OWNER {DB_ROLE}')
        yield PostgresServer(
            host="127.0.0.1",
            port=port,
            role=DB_ROLE,
            password=DB_PASSWORD,
            databases=tuple(databases),
            data_dir=data_dir,
            socket_dir=socket_dir,
            log_path=log_path,
            pid=proc.pid,
        )
    finally:
        try:
            if proc is not None:
                # SIGQUIT to the postmaster only: it ends its backends itself; the group gets SIGKILL if it lingers.
                stop_process_tree(proc, first_signal=signal.SIGQUIT, group_signal=False, term_timeout=10)
        finally:
            if tmp_path is not None:
                with contextlib.suppress(OSError):
                    shutil.copy(log_path, Path(tmp_path) / "postgres.log")
            shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# MLflow tracking server


class ServerURL(str):
    """A server's base URL (a plain ``str`` to every caller) that also knows the server's `pid`, its process group."""

    pid: int

    def __new__(cls, url: str, pid: int) -> Self:
        self = super().__new__(cls, url)
        self.pid = pid
        return self


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifacts_dir: str | Path,
    *,
    start_timeout: float = 90.0,
    log_path: str | Path | None = None,
    job_execution: bool = False,
    env: Mapping[str, str] | None = None,
) -> Iterator[ServerURL]:
    """An MLflow tracking server on http://127.0.0.1:<free port>, yielded as that URL (a :class:`ServerURL`: a
    ``str`` with the server's ``.pid``).

    ``python -m mlflow server --backend-store-uri <uri> --artifacts-destination <dir> --serve-artifacts
    --host 127.0.0.1 --port <port> --workers 1``: artifacts go through the server (``mlflow-artifacts:/``) into
    `artifacts_dir`, the way a client on another host would log them. One worker: tests need no more, and on a
    small machine each uvicorn worker is another few hundred MB. No security flags are needed: MLflow 3's host
    check (``--allowed-hosts``) allows localhost and private addresses by default, and clients do not send CORS
    headers. On a fresh database the server runs its migrations before it answers, hence the generous timeout.

    MLflow 3.17's server also starts, by default, a job runner and seven huey consumer processes (about 1 GB more
    resident memory and much CPU at start, for GenAI jobs ablate does not use); they are off here
    (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``) unless `job_execution`. `env` adds to the server's environment.

    Ready when ``GET /health`` answers 200. Stopped by SIGTERM to its process group (uvicorn and its worker), then
    SIGKILL. Its log is `log_path` (default: ``mlflow-server.log`` beside `artifacts_dir`).
    """
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else artifacts_dir.parent / "mlflow-server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                backend_store_uri,
                "--artifacts-destination",
                str(artifacts_dir),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=str(artifacts_dir.parent),
            env=_clean_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(job_execution).lower(), **(env or {})}),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise ComponentStartError(f"mlflow server exited with {proc.returncode}; log:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ComponentStartError(
                    f"mlflow server not healthy after {start_timeout:.0f}s at {url}; log:\n{_tail(log_path)}"
                )
            time.sleep(0.5)
        yield ServerURL(url, proc.pid)
    finally:
        stop_process_tree(proc, term_timeout=10)


# --------------------------------------------------------------------------------------------------------------
# Ray


#: Printed by the checker subprocess: the cluster's nodes as GCS sees them, one JSON list. It asks GCS directly
#: (ray._raylet.GcsClient) instead of ray.init: no driver, no worker, about a second; and the pytest process never
#: holds a Ray connection that a test did not open itself. Falls back to ray.init/ray.nodes if that private API
#: moves.
_NODES_CHECKER = r"""
import json, socket, sys
address = sys.argv[1]
host, port = address.rsplit(":", 1)
socket.create_connection((host, int(port)), timeout=2).close()  # GcsClient would retry for a minute otherwise
try:
    from ray._raylet import GcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo
    infos = GcsClient(address=address).get_all_node_info(timeout=5).values()
    nodes = [{"node_id": i.node_id.hex(), "ip": i.node_manager_address, "alive": i.state == GcsNodeInfo.ALIVE,
              "is_head": i.is_head_node, "resources": dict(i.resources_total)} for i in infos]
except (ImportError, AttributeError):
    import ray
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    nodes = [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "alive": n["Alive"],
              "is_head": n.get("IsHeadNode", False), "resources": n["Resources"]} for n in ray.nodes()]
    ray.shutdown()
print(json.dumps(nodes))
"""


def ray_nodes(address: str, timeout: float = 20.0) -> list[dict]:
    """The nodes of the Ray cluster at `address` (dicts: node_id, ip, alive, is_head, resources), from a
    short-lived subprocess; raises if GCS does not answer within `timeout`."""
    out = subprocess.run(
        [sys.executable, "-c", _NODES_CHECKER, address],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env(),
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"node check failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def node_resource(index: int) -> str:
    """The custom resource that names node `index` (0 = head): ``resources={node_resource(1): 0.01}`` pins an
    actor or task to worker node 1."""
    return f"ablate_node_{index}"


@dataclasses.dataclass
class RayNode:
    """One ``ray start --block`` of a cluster: `pgid` is its process group (the ``ray start`` pid), `node_id` and
    `ip` as Ray reports them, `resource` the custom resource naming it, `temp_dir` its Ray temp dir."""

    index: int
    node_id: str
    ip: str
    pgid: int
    resource: str
    temp_dir: str
    log_path: str
    proc: subprocess.Popen = dataclasses.field(repr=False)
    killed: bool = False


@dataclasses.dataclass
class RayCluster:
    """A running Ray cluster: `address` is ``127.0.0.1:<GCS port>`` for ``ray.init(address=...)``; `nodes[0]` is
    the head, `nodes[i]` worker i, each with a custom resource :func:`node_resource` (i) of 1."""

    address: str
    nodes: list[RayNode]
    root: str

    def kill_node(self, index: int, *, timeout: float = 10.0) -> list[int]:
        """Kill node `index` abruptly, like a machine that loses power: SIGKILL to its ``ray start`` process group
        (``ray start``, raylet, agents, and workers unless Ray gave them their own group), then SIGKILL by pid to
        any recorded descendant still alive after that. Returns those escapees' pids (empty when the group took
        everything down). Ray is not told: GCS finds the node dead by its health checks."""
        node = self.nodes[index]
        tree = sorted({node.proc.pid, *descendants(node.proc.pid), *group_members(node.pgid)})
        _signal_group(node.pgid, signal.SIGKILL)
        escaped = _wait_gone(tree, 2.0, node.proc)
        if escaped:
            _signal_pids(escaped, signal.SIGKILL)
            if still := _wait_gone(escaped, timeout, node.proc):
                raise RuntimeError(f"node {index}: processes {still} survived SIGKILL")
        node.killed = True
        return escaped

    def node_processes(self, index: int) -> list[int]:
        """Live processes of node `index`: its ``ray start`` and every descendant."""
        node = self.nodes[index]
        return [p for p in [node.proc.pid, *descendants(node.proc.pid)] if _alive(p)]

    def alive_nodes(self) -> list[dict]:
        """GCS's view of the live nodes (from a checker subprocess)."""
        return [n for n in ray_nodes(self.address) if n["alive"]]

    def wait_node_dead(self, index: int, timeout: float = 30.0) -> float:
        """Seconds until GCS reports node `index` dead; raises TimeoutError after `timeout`."""
        start = time.monotonic()
        node_id = self.nodes[index].node_id
        while time.monotonic() - start < timeout:
            if not any(n["node_id"] == node_id and n["alive"] for n in ray_nodes(self.address)):
                return time.monotonic() - start
            time.sleep(0.5)
        raise TimeoutError(f"node {index} ({node_id}) still alive in GCS after {timeout}s")


#: GCS's failure detection, tightened on every node: by default (5 health checks 3 s apart, after a 5 s delay) a
#: killed node stays "alive" for 15-30 s; these make it 2-4 s, which keeps node-failure tests short.
RAY_FAST_FAILURE_DETECTION = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def _ray_client_installed() -> bool:
    """``ray start`` refuses --ray-client-server-port without ray[client]; without it, no client server runs."""
    try:
        from ray._private.parameter import get_ray_client_dependency_error  # the check `ray start` makes
    except ImportError:
        return importlib.util.find_spec("grpc") is not None
    return get_ray_client_dependency_error() is None


def _node_ports(head: bool, worker_ports: int) -> tuple[list[str], dict[str, int]]:
    """Explicit ports for one node. Every listening port a node opens is named here: left to defaults, a second
    node on this host would try the head's object manager/agent/metrics ports, and a second cluster the first's
    GCS (6379) and dashboard (8265, bound even with --include-dashboard=false, by the minimal dashboard head)."""
    names = [
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
    ]
    if head:
        names += ["port", "dashboard-port"]
        if _ray_client_installed():
            names.append("ray-client-server-port")
    ports = dict(zip(names, free_ports(len(names))))
    low = free_ports(worker_ports, consecutive=True)
    ports["min-worker-port"], ports["max-worker-port"] = low[0], low[-1]
    return [f"--{k}={v}" for k, v in ports.items()], ports


def _ray_log_tail(log_path: str, temp_dir: str) -> str:
    parts = [f"--- {log_path}\n{_tail(log_path)}"]
    for name in ("gcs_server.err", "gcs_server.out", "raylet.err", "raylet.out"):
        for path in sorted(glob.glob(f"{temp_dir}/session_*/logs/{name}"))[-1:]:
            parts.append(f"--- {path}\n{_tail(path, 1500)}")
    return "\n".join(parts)


@contextlib.contextmanager
def ray_cluster(
    tmp_path: str | Path | None = None,
    worker_nodes: int = 2,
    cpus_per_node: int = 1,
    *,
    head_cpus: int | None = None,
    object_store_mb: int = 128,
    worker_ports_per_node: int = 40,
    start_timeout: float = 60.0,
    stop_grace: float = 10.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[RayCluster]:
    """A Ray cluster of a head and `worker_nodes` worker nodes on this host, each a ``ray start --block`` in its
    own process group with `cpus_per_node` CPUs, no GPUs, `object_store_mb` of object store and a custom resource
    ``ablate_node_<i>`` (0 = head) that pins work to it. Yields a :class:`RayCluster`.

    Nodes start one at a time, each waited for until GCS lists it alive (a checker subprocess, not ray.init here):
    a worker needs the head's GCS, a start that fails names its node, and two cores are not shared by several
    starting nodes at once. Each node has its own ``--temp-dir`` under a short ``/tmp/ablate-ray-*`` folder: Ray's
    Unix socket paths live below it and must stay under 107 bytes, which pytest's tmp_path would exceed. Ray
    replaces ``--node-ip-address=127.0.0.1`` by the host's routable address (services.resolve_ip_for_localhost),
    so ``node.ip`` may be the host's IP; GCS listens on all interfaces, and ``address`` uses 127.0.0.1. A driver's
    ``ray.init(address=...)`` on this host attaches to the head's raylet (Ray prefers the head among local nodes),
    so killing a worker node does not kill the driver.

    GCS's failure detection is tightened (:data:`RAY_FAST_FAILURE_DETECTION`, overridable by `env`) so that a node
    killed with :meth:`RayCluster.kill_node` is reported dead in seconds.

    Stop: SIGTERM to the worker nodes' ``ray start`` processes, then to the head's, each batch given `stop_grace`
    seconds; then SIGKILL to every node's process group and to every recorded descendant (Ray gives each worker
    process a process group of its own), then the folder is removed. `tmp_path`, if given, receives the
    ``ray start`` logs.
    """
    root = _mkdtemp("ablate-ray-")
    ray = _bin("ray")
    node_env = _clean_env({**RAY_FAST_FAILURE_DETECTION, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})
    nodes: list[RayNode] = []
    procs: list[subprocess.Popen] = []
    address = ""
    try:
        for index in range(worker_nodes + 1):
            head = index == 0
            flags, ports = _node_ports(head, worker_ports_per_node)
            if head:
                address = f"127.0.0.1:{ports['port']}"
            temp_dir, log_path = f"{root}/n{index}", f"{root}/n{index}.log"
            resource = node_resource(index)
            role = ["--head", "--include-dashboard=false"] if head else [f"--address={address}"]
            cpus = head_cpus if head and head_cpus is not None else cpus_per_node  # 0: the head runs no worker
            cmd = [
                ray,
                "start",
                "--block",
                *role,
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={cpus}",
                "--num-gpus=0",
                f"--object-store-memory={object_store_mb * 1024 * 1024}",
                f"--temp-dir={temp_dir}",
                f"--resources={json.dumps({resource: 1})}",
                "--disable-usage-stats",
                *flags,
            ]
            started = time.monotonic()
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    cmd,
                    cwd=root,
                    env=node_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs.append(proc)
            found = None
            while found is None:
                if proc.poll() is not None:
                    raise ComponentStartError(
                        f"ray node {index} exited with {proc.returncode} while starting:\n"
                        f"{_ray_log_tail(log_path, temp_dir)}"
                    )
                if time.monotonic() - started > start_timeout:
                    raise ComponentStartError(
                        f"ray node {index} not alive in GCS after {start_timeout:.0f}s:\n"
                        f"{_ray_log_tail(log_path, temp_dir)}"
                    )
                try:
                    listed = ray_nodes(address, timeout=min(20.0, max(5.0, start_timeout)))
                    found = next((n for n in listed if n["alive"] and resource in n["resources"]), None)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError):
                    pass  # GCS not up yet
                if found is None:
                    time.sleep(0.5)
            nodes.append(
                RayNode(
                    index=index,
                    node_id=found["node_id"],
                    ip=found["ip"],
                    pgid=proc.pid,
                    resource=resource,
                    temp_dir=temp_dir,
                    log_path=log_path,
                    proc=proc,
                )
            )
        yield RayCluster(address=address, nodes=nodes, root=root)
    finally:
        try:
            trees = {p.pid: sorted({p.pid, *descendants(p.pid), *group_members(p.pid)}) for p in procs}
            # Workers first, then the head; each by SIGTERM to its `ray start` alone, which then ends its raylet
            # and agents in order (well under a second each). Signalled as a whole group instead, the head's GCS
            # lingers for 15 s and more, and so does a worker whose head is already gone.
            for batch in (procs[1:], procs[:1]):
                _signal_pids([p.pid for p in batch], signal.SIGTERM)
                deadline = time.monotonic() + stop_grace
                for proc in batch:
                    _wait_gone(trees[proc.pid], max(0.0, deadline - time.monotonic()), proc)
            for proc in procs:  # whatever SIGTERM did not end, and anything forked meanwhile
                stop_process_tree(proc, term_timeout=0.1, first_signal=signal.SIGKILL)
                _signal_pids([p for p in trees[proc.pid] if _alive(p)], signal.SIGKILL)
            left = [p for pids in trees.values() for p in _wait_gone(pids, 10.0)]
            if left:
                raise RuntimeError(f"ray processes {left} survived SIGKILL")
        finally:
            if tmp_path is not None:
                for path in glob.glob(f"{root}/n*.log"):
                    with contextlib.suppress(OSError):
                        shutil.copy(path, Path(tmp_path) / f"ray-{Path(path).name}")
            shutil.rmtree(root, ignore_errors=True)
