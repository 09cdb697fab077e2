"""User-facing errors: one clear line, exit code 2, no traceback unless --debug."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AblateError(Exception):
    """Bad input from the user (spec, flags, store): printed as one line, exit code 2."""

    exit_code = 2


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
