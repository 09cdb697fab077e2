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
from ablate.tracking import INTERRUPTED, restore_signal_handlers

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


def as_interrupted(exc: BaseException) -> Interrupted:
    """The interruption `exc` stands for. A plain KeyboardInterrupt may stand for SIGTERM: library code that waits in
    native code runs our handler there and, when it raises, raises a KeyboardInterrupt of its own (Ray's ray.wait
    and ray.get do), so the signal that came first (`interruptible` keeps it) says which it was."""
    if isinstance(exc, Interrupted):
        return exc
    return Interrupted(_received[0] if _received else signal.SIGINT)


def reason_of(exc: BaseException) -> str:
    """The `reason` a run stopped by `exc` records: preempted (SIGTERM) or interrupted (Ctrl-C)."""
    return as_interrupted(exc).reason


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
def interruptible(exits_after: bool = False) -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted once (see the module docstring), in the main thread only (the only
    one that may set handlers); elsewhere this does nothing.

    `exits_after`: the process ends with the block (the `ablate` command, not a caller in-process). Once it was
    interrupted, the signals are then ignored to the end rather than given back to Python's handlers: recording an
    interruption takes well under a second, and an impatient second Ctrl-C that lands after it, while the
    interpreter shuts down, would otherwise print a KeyboardInterrupt traceback from an exit hook, or kill the
    process by the signal (Python puts SIGINT back to the default action while it finalises) instead of exit 130.
    Ignored (SIG_IGN) is the one disposition the interpreter's shutdown leaves alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt as exc:  # which signal it was, said before the block forgets it (see as_interrupted)
        stopped = as_interrupted(exc)
        if stopped is exc:
            raise
        raise stopped.with_traceback(exc.__traceback__) from None
    finally:
        # For sure: _handle may raise as a handler is put back (the first signal, arriving just now); raised after.
        raised = restore_signal_handlers({sig: signal.SIG_IGN if exits_after and _received else handler
                                          for sig, handler in previous.items()})
        _received.clear()  # they were this block's: a dispatcher run later in this process must not see them
        if raised is not None:
            raise raised


def raise_on_sigterm() -> None:
    """In a worker process: SIGTERM (a scheduler preempting the job, or the parent passing it on) stops the task
    as Ctrl-C does, recording its runs KILLED with reason `preempted`."""

    def stop(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, stop)
