"""How a person types a command here: every hint ablate prints that names a program (`ablate report`, `mlflow ui`,
`optuna-dashboard`, `mlflow models serve`) names it through `command`, so that the hint works where the user is.

The README's quick start installs into a virtual environment and calls `.venv/bin/ablate` without activating it:
then `mlflow` and `ablate` are not on PATH, and a hint saying `mlflow ui` is "command not found". The programs
installed with ablate lie beside the Python running it (the environment's bin folder, taken as `sys.executable`
names it, links unresolved), so a hint names that path instead. `mlflow models serve` is worse: MLflow starts
`uvicorn` by name, so even `.venv/bin/mlflow models serve` fails unless the folder is on PATH (`on_path`).

May import: the standard library only (it sits below every package: any of them may print a hint).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def command(name: str) -> str:
    """`name` when the shell finds it on PATH; else the program of that name beside this Python (a virtual
    environment not activated), as a path — relative to the current folder when that is shorter; else `name`."""
    if shutil.which(name) is not None:
        return name
    beside = _beside(name)
    return shlex.quote(_shown(beside)) if beside is not None else name


def own(name: str) -> str:
    """The program of that name beside this Python when there is one (pip: the one that installs where ablate runs,
    not whichever pip PATH finds first), else `command(name)`."""
    beside = _beside(name)
    return shlex.quote(_shown(beside)) if beside is not None else command(name)


def installed(name: str) -> bool:
    """Whether `command(name)` names a program that is there (an optional tool, such as optuna-dashboard, may not)."""
    return shutil.which(name) is not None or _beside(name) is not None


def on_path(line: str, *programs: str) -> str:
    """`line`, a command that runs `programs` by name (its first word among them), as the user can run it here: as
    it is when they are all on PATH, else with the folder beside this Python put first on PATH for it
    (`PATH=.venv/bin:$PATH mlflow models serve …`), when they all lie there."""
    if all(shutil.which(name) is not None for name in programs):
        return line
    if any(_beside(name) is None for name in programs):
        return line
    return f"PATH={shlex.quote(_shown(_bin()))}:$PATH {line}"


def _bin() -> Path:
    return Path(os.path.abspath(sys.executable)).parent  # abspath, not resolve: a venv's python links elsewhere


def _beside(name: str) -> Path | None:
    path = _bin() / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _shown(path: Path) -> str:
    """The path as short as it reads: relative to the current folder when shorter; never a bare name (the shell
    would look that up on PATH)."""
    absolute = str(path)
    try:
        relative = os.path.relpath(absolute)
    except (ValueError, OSError):  # another drive (Windows); a current folder that is gone
        relative = absolute
    shown = relative if len(relative) < len(absolute) else absolute
    return shown if os.sep in shown else os.path.join(os.curdir, shown)
