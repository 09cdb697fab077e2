"""The Ray cluster as the driver finds it: connecting to it, and the worker slots it holds.

Owns `connect` (Ray imported and joined to the cluster, with a clear error when there is none, and ablate's own
Ctrl-C and SIGTERM handlers kept over Ray's), and `ray_slots`: how many workers the cluster's live nodes hold, of
what device and threads (see ablate.run._ray's docstring), refusing a SQLite store or claims file that the
workers on other nodes could not reach. `ray` is imported here only on first use.
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import Any

from ablate.errors import AblateError
from ablate.run._slots import Slot
from ablate.spec import ExecutionSettings
from ablate.tracking import restore_signal_handlers, sqlite_path

PROBE_SECONDS = 5.0  # how long the head's port may take to answer before the cluster counts as unreachable


def connect(address: str | None) -> Any:
    """Ray, connected to the cluster at `address` ("host:port" or "auto"; None: RAY_ADDRESS, else a cluster running
    on this machine, else a new one on this machine only, as ray.init does); a clear error if it cannot."""
    try:
        import ray
    except ImportError as exc:
        raise AblateError('the ray backend needs Ray: pip install "ablate[ray]"') from exc
    if not ray.is_initialized():
        _probe(address)
        handlers = _handlers()
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"at {address}" if address else "(RAY_ADDRESS, or one on this machine)"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # not Ray's traceback
            raise AblateError(f"no Ray cluster {where}: {first}. Start one with `ray start --head` (and `ray start "
                              "--address=HEAD:PORT` on the other nodes), then give its address") from exc
        finally:
            # ray.init sets its own SIGTERM handler in a driver (it exits at once): ours stays, since SIGTERM ends a
            # run as Ctrl-C does, recording its runs (ablate.run's signals).
            raised = restore_signal_handlers(handlers)
        if raised is not None:
            raise raised
    return ray


def _probe(address: str | None) -> None:
    """A head that does not answer is said so in seconds: ray.init itself retries for minutes, printing warnings."""
    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_SECONDS):
            pass
    except (OSError, ValueError) as exc:
        raise AblateError(f"no Ray cluster at {address}: nothing answers there ({exc}). Start its head with `ray start "
                          "--head --port=PORT` (and `ray start --address=HEAD:PORT` on the other nodes), or give the "
                          "address `ray start` printed") from exc


def _handlers() -> dict[int, Any]:
    """Ctrl-C's and SIGTERM's Python handlers (none off the main thread, where none may be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    return {sig: handler for sig, handler in handlers.items() if handler is not None}


def ray_slots(execution: ExecutionSettings, tracking_uri: str | None = None, claims: str | None = None) -> list[Slot]:
    """The slots of the cluster (see the module docstring), connecting to it first; a SQLite `tracking_uri` or
    `claims` database is refused on a cluster of several nodes (its file is on the driver's machine only)."""
    ray = connect(execution.address)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if tracking_uri is not None and sqlite_path(tracking_uri) is not None and len(nodes) > 1:
        raise AblateError(f"tracking store {tracking_uri}: a SQLite file is on this machine only, and the workers on "
                          f"the other {len(nodes) - 1} node(s) of the Ray cluster cannot write to it. Use a tracking "
                          "server every node reaches: --tracking-uri http://HOST:5000 (README: Several machines)")
    if claims is not None and sqlite_path(claims) is not None and len(nodes) > 1:
        raise AblateError(f"claims database {sqlite_path(claims)}: a SQLite file is on this machine only, and the "
                          f"workers on the other {len(nodes) - 1} node(s) of the Ray cluster would each claim trials "
                          "on their own: pass --claims postgresql://… (a database every node reaches; the one behind "
                          "the MLflow server will do) or --storage with one (README: Exactly once)")
    gpus = int(sum(n["Resources"].get("GPU", 0) for n in nodes))
    cpus = [int(n["Resources"].get("CPU", 0)) for n in nodes]
    if isinstance(execution.devices, tuple):
        raise AblateError(f"devices {list(execution.devices)}: with the ray backend, devices is \"auto\" or \"cpu\" "
                          "(Ray places the workers on the GPUs of every node)")
    cluster = f"Ray cluster {ray.get_runtime_context().gcs_address}, {len(nodes)} node(s)"
    if execution.devices == "cpu" or gpus == 0:
        count = sum(cpus) if execution.workers_per_device is None else execution.workers_per_device * sum(
            1 for c in cpus if c)
        device, threads = "cpu", 1
    else:
        count = gpus * (execution.workers_per_device or 1)
        device, threads = "cuda:0", max(1, sum(cpus) // count)
    if execution.max_workers is not None:
        count = min(count, execution.max_workers)
    if count == 0:
        raise AblateError(f"the {cluster} has no {'GPU' if device != 'cpu' else 'CPU'} for a worker")
    return [Slot(index=k, device=device, threads=threads, cluster=cluster) for k in range(count)]
