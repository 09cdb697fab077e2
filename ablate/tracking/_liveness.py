"""Is the process behind a RUNNING run still there? Liveness that works on one machine and across several.

A run started by ablate carries who runs it — host, pid and the process's start time — and a
heartbeat: the time of its last beat, written every `heartbeat_every` seconds by a thread of
the process that runs it (the invocation for its parent run, the worker for a trial run).
Optuna's storages prove a trial alive the same way (optuna/storages/_heartbeat.py).

The contract a reader relies on:
- On the host that wrote it, the process table answers, at once and exactly: the pid is
  running and started when the run says (a recycled pid is not taken for it).
- On any other host, the heartbeat answers: alive while the last beat is younger than
  STALE_AFTER intervals. Hosts are assumed to keep their clocks in step (NTP); the margin
  of several intervals absorbs a missed write or a small skew.
- A run from another host that carries no heartbeat (written before ablate had one) counts
  as alive: taking a live invocation for dead would train its trials twice, while a dead one
  taken for alive only delays its trials until someone cleans up.
"""

from __future__ import annotations

import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ablate.tracking._tags import HEARTBEAT, HEARTBEAT_EVERY, HOST, PID, PID_START

BEAT_SECONDS = 15.0  # how often a live invocation or worker writes its heartbeat
STALE_AFTER = 4  # intervals without a beat after which another host takes the writer for dead


def process_start(pid: int) -> str | None:
    """When a process started (clock ticks since boot, from /proc), so a recycled pid is not taken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


@dataclass(frozen=True)
class Identity:
    """A process, as a run records it: its host, pid and start time."""

    host: str
    pid: int | None
    start: str = ""  # '' when unknown (no /proc)

    @classmethod
    def of_this_process(cls) -> Identity:
        return cls(platform.node(), os.getpid(), process_start(os.getpid()) or "")

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Identity:
        pid = str(tags.get(PID, ""))
        return cls(str(tags.get(HOST, "")), int(pid) if pid.isdigit() else None, str(tags.get(PID_START, "") or ""))

    def tags(self) -> dict[str, str]:
        return {HOST: self.host, PID: "" if self.pid is None else str(self.pid), PID_START: self.start}

    @property
    def here(self) -> bool:
        """On this host, with a pid to look up: the process table can answer for it."""
        return self.host == platform.node() and self.pid is not None

    def running(self) -> bool:
        """On this host: is the process still running (and the same process, not a recycled pid)?"""
        started = process_start(self.pid)
        if started is None:
            if Path("/proc").is_dir():
                return False
            try:  # no /proc (macOS): is the pid in use at all?
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return not self.start or started == self.start


def heartbeat_tags(every: float = BEAT_SECONDS, now: float | None = None) -> dict[str, str]:
    """The tags of one beat (a run is created with its first)."""
    return {HEARTBEAT: f"{time.time() if now is None else now:.0f}", HEARTBEAT_EVERY: f"{every:g}"}


def beat_is_fresh(tags: Mapping[str, str], now: float | None = None) -> bool | None:
    """Did the run beat within STALE_AFTER of its intervals? None: it carries no heartbeat."""
    try:
        last, every = float(tags[HEARTBEAT]), float(tags.get(HEARTBEAT_EVERY, BEAT_SECONDS))
    except (KeyError, ValueError):
        return None
    return (time.time() if now is None else now) - last < STALE_AFTER * every


def alive(tags: Mapping[str, str], now: float | None = None) -> bool:
    """Is the process that tagged a run (or an Optuna trial) still running? See the module's contract."""
    identity = Identity.from_tags(tags)
    if identity.here:
        return identity.running()
    fresh = beat_is_fresh(tags, now)
    return True if fresh is None else fresh


class Heartbeat:
    """Calls `beat()` every `every` seconds on a daemon thread until stopped.

    A failed beat (a busy or unreachable store) is skipped, not raised: it only makes the writer
    look older, and STALE_AFTER intervals leave room for several misses in a row.
    """

    def __init__(self, beat: Callable[[], None], every: float = BEAT_SECONDS):
        self.beat, self.every = beat, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ablate-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.every)

    def _run(self) -> None:
        # Ctrl-C and SIGTERM are for the main thread (Python runs handlers only there): blocked here, the kernel never
        # hands this thread a signal sent to the process, which it could drop while the main one ignores it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        while not self._stop.wait(self.every):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 — see the class docstring
                continue

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
