"""Ctrl-C and SIGTERM: one way to stop a run, whichever signal asks.

SIGTERM is what `kill`, SLURM's preemption and Kubernetes send; it is handled as Ctrl-C is —
hand out nothing more, end the running trials KILLED (reason `preempted` rather than
`interrupted`), close the invocation's parent run, print the resume command — and exits 143
(128 + SIGTERM) where Ctrl-C exits 130.

Only the first signal interrupts. Those that follow while the run records its interruption
(an impatient second Ctrl-C, or SIGTERM followed by the scheduler's SIGINT) do not cut the
recording short, which would leave runs RUNNING: they only ask the wait for workers to stop
waiting (`hurried`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ablate.errors import EXIT_INTERRUPTED, EXIT_TERMINATED
from ablate.tracking import INTERRUPTED

PREEMPTED = "preempted"  # the reason of a run ended by SIGTERM


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; a KeyboardInterrupt, so that everything that handles Ctrl-C handles it."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def reason(self) -> str:
        return PREEMPTED if self.signum == signal.SIGTERM else INTERRUPTED

    @property
    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.signum == signal.SIGTERM else EXIT_INTERRUPTED


def reason_of(exc: BaseException) -> str:
    """The `reason` a run stopped by `exc` records: preempted (SIGTERM) or interrupted (Ctrl-C)."""
    return exc.reason if isinstance(exc, Interrupted) else INTERRUPTED


_received: list[int] = []  # the signals received while `interruptible` is on, in order


def hurried() -> bool:
    """Was the run asked again to stop while it records its interruption?"""
    return len(_received) > 1


def raise_if_received() -> None:
    """Raise the interruption again if a signal came and its exception was swallowed on the way (library code
    that catches everything while we waited in it): the dispatcher asks between two events, so no signal is lost."""
    if _received:
        raise Interrupted(_received[0])


def _handle(signum: int, frame: object) -> None:
    _received.append(signum)
    if len(_received) == 1:
        raise Interrupted(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted once (see the module docstring), in the main thread only (the only
    one that may set handlers); elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def raise_on_sigterm() -> None:
    """In a worker process: SIGTERM (a scheduler preempting the job, or the parent passing it on) stops the task
    as Ctrl-C does, recording its runs KILLED with reason `preempted`."""

    def stop(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, stop)
