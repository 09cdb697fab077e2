"""User-facing errors: one clear line, a documented exit code, no traceback unless --debug."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# The exit codes of `ablate` (README "Exit codes"; the CLI's epilog). 1 is only ever "some trial failed".
EXIT_FAILED_TRIALS, EXIT_BAD_INPUT, EXIT_STORE = 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as shells report them


class AblateError(Exception):
    """Bad input from the user (spec, flags, data files): printed as one line, exit code 2."""

    exit_code = EXIT_BAD_INPUT


class StoreError(AblateError):
    """The tracking store (or the Optuna storage) failed or cannot be used: corrupt, read-only, full, unreachable,
    not ablate's. Exit code 3, with what to do; nothing it already holds is changed."""

    exit_code = EXIT_STORE


class SpecError(AblateError):
    """A problem in a study file, located by file and key path."""

    def __init__(self, file: str, path: str, message: str):
        self.file = file
        self.path = path
        self.message = message
        where = f"{file}: {path}" if path else file
        super().__init__(f"{where}: {message}")


def closest(name: str, allowed: Iterable[str]) -> str | None:
    """The allowed name nearest to a typo, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, allowed: Iterable[str]) -> str:
    """" (did you mean 'x'?)" when a close name exists, else ''."""
    match = closest(name, list(allowed))
    return f" (did you mean '{match}'?)" if match else ""
