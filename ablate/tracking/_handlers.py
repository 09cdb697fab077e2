"""Putting signal handlers back for sure: shared by every block that swaps Ctrl-C's and SIGTERM's handlers for a
while (a store call held whole, an interruptible run, Ray's start-up). Imports nothing heavy: ablate.run's signals
use it before MLflow loads."""

from __future__ import annotations

import signal
from typing import Any


def restore_signal_handlers(handlers: dict[int, Any]) -> BaseException | None:
    """Put these handlers back, each one for sure, and return what a handler raised meanwhile (for the caller to
    raise once all are back): signal.signal first runs the handlers of the signals that already came (one that came
    just after an earlier handler was put back), and when one raises, its swap is not done."""
    raised = None
    for sig, handler in handlers.items():
        while True:
            try:
                signal.signal(sig, handler)
                break
            except BaseException as exc:  # noqa: BLE001 — raised by the caller once every handler is back
                raised = raised or exc
    return raised
