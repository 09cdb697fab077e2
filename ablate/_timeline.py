"""Where the seconds before the first training step go: phase marks, written only when asked for.

With ABLATE_TIMELINE set to a file, `mark(phase)` appends one line to it — the system-wide monotonic clock, the
process id and the phase — from every process of a run (the parent, the worker server, the workers), so
benchmarks/startup.py can put the phases of all of them on one time axis from the moment it started the command.
Without it `mark` does nothing but test one global, and prints nothing: a normal run is unchanged.

May import: the standard library only (every layer marks its phases).
"""

from __future__ import annotations

import os
import time

TIMELINE_ENV = "ABLATE_TIMELINE"
_path = os.environ.get(TIMELINE_ENV) or None


def mark(phase: str) -> None:
    """This process reached `phase` now (a no-op unless ABLATE_TIMELINE names a file)."""
    if _path is None:
        return
    line = f"{time.monotonic():.6f}\t{os.getpid()}\t{phase}\n".encode()
    try:  # one write of one short line to a file opened for appending: lines of several processes do not mix
        descriptor = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)
    except OSError:
        pass  # a timeline is a measurement, never a reason for a run to fail
