"""Faults: what ends a worker's task other than its training finishing, and how each is told apart.

Owns the `reason` a failed trial is recorded with (diverged, out of memory, or an error: `classify`), the
exception a worker stops by when the invocation that started it is gone (`Orphaned`), and the test-only faults
(ABLATE_TEST_FAULTS) that make a trial raise, diverge, run out of memory, hang or kill its worker, so that every
one of these paths can be exercised: read in the driver (`faults_from_env`), fired in the worker (`inject`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from ablate.tracking import DIVERGED, FAILED_ERROR, OOM

# Test-only fault injection, as JSON: {"<stage>:<seed>": "raise" | "nan" | "oom" | "kill" | "kill-mid-event" | "slow"}.
FAULTS_ENV = "ABLATE_TEST_FAULTS"
SLOW_SECONDS = "slow-seconds"  # a key of the faults: how long "slow" sleeps (ABLATE_TEST_SLOW_SECONDS, default 30)

Die = Callable[[bool], None]  # the "kill" faults: end this worker at once (True: halfway through writing an event)


def faults_from_env() -> dict[str, str]:
    """The faults to inject, read in the driver: they travel in the WorkerConfig, since a worker on a cluster's
    node does not share the driver's environment."""
    raw = os.environ.get(FAULTS_ENV)
    faults = json.loads(raw) if raw else {}
    if faults and "ABLATE_TEST_SLOW_SECONDS" in os.environ:
        faults[SLOW_SECONDS] = os.environ["ABLATE_TEST_SLOW_SECONDS"]
    return faults


class Orphaned(Exception):
    """The invocation that started this worker is gone (killed): stop, record the trial as interrupted, exit."""


def classify(exc: BaseException) -> str:
    """The `reason` of a failed trial: diverged, oom or error."""
    import torch

    from ablate.engine import Diverged

    if isinstance(exc, Diverged):
        return DIVERGED
    if isinstance(exc, torch.cuda.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc)):
        return OOM
    return FAILED_ERROR


def inject(fault: str | None, epoch: int, die: Die, faults: dict[str, str]) -> None:
    """Test-only faults, fired at the end of the first epoch (after the trial's run exists); `die` ends the worker
    at once, `faults` are its WorkerConfig's (how long "slow" sleeps)."""
    if fault is None or epoch != 1:
        return
    import torch

    if fault in ("kill", "kill-mid-event"):  # a kill -9, possibly halfway through writing an event
        die(fault == "kill-mid-event")
    if fault == "raise":
        raise RuntimeError("injected fault")
    if fault == "oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
    if fault == "slow":  # in short sleeps, as a training loop's steps: an interrupt raised in this thread by
        deadline = time.monotonic() + float(faults.get(SLOW_SECONDS, "30"))  # a Ray actor lands
        while time.monotonic() < deadline:  # between two
            time.sleep(0.05)
