"""Hints that work where the user is (ablate._shell): a program on PATH by its name, one in a virtual environment that
is not activated by its path, and `mlflow models serve` — which starts uvicorn by name — with that folder on PATH. The
hints are run through a shell, as a person pastes them, with PATH holding only the system's folders."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from ablate import _shell
from ablate.cli import main
from ablate.cli._commands import serve_hint
from ablate.cli._run import _print_next_steps, resume_hint
from ablate.tracking import default_uri

SYSTEM_PATH = "/usr/bin:/bin"


@pytest.fixture
def venv(tmp_path, monkeypatch):
    """A project folder holding .venv/bin/{python, mlflow, uvicorn, ablate}, this Python running as that python, the
    project the current folder and PATH without .venv/bin: the quick start's situation. The fake mlflow starts uvicorn
    by name, as `mlflow models serve` does."""
    bin_ = tmp_path / "project" / ".venv" / "bin"
    bin_.mkdir(parents=True)
    scripts = {"mlflow": '#!/bin/sh\nexec uvicorn "$@"\n', "uvicorn": '#!/bin/sh\necho "uvicorn serves $*"\n',
               "ablate": '#!/bin/sh\necho "ablate $*"\n', "python": "#!/bin/sh\n"}
    for name, text in scripts.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_ / "python"))
    monkeypatch.setenv("PATH", SYSTEM_PATH)
    monkeypatch.chdir(tmp_path / "project")
    return bin_


def _sh(line: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, env={"PATH": SYSTEM_PATH}, timeout=30)


def test_a_program_beside_python_but_not_on_path_is_named_by_its_path_relative_when_shorter(venv, tmp_path,
                                                                                          monkeypatch):
    assert _shell.command("mlflow") == ".venv/bin/mlflow"
    assert _sh(f"{_shell.command('ablate')} report").stdout == "ablate report\n"  # the hint runs as printed
    deep = tmp_path.joinpath(*["nested"] * 40)
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert _shell.command("mlflow") == str(venv / "mlflow")  # from far away the absolute path is shorter
    monkeypatch.chdir(venv)
    assert _shell.command("mlflow") == "./mlflow"  # never a bare name: the shell would look it up on PATH
    assert _shell.command("optuna-dashboard") == "optuna-dashboard" and not _shell.installed("optuna-dashboard")


def test_a_program_on_path_is_named_plainly(venv, monkeypatch):
    monkeypatch.setenv("PATH", f"{venv}:{SYSTEM_PATH}")  # the environment activated
    assert _shell.command("mlflow") == "mlflow" and _shell.command("ablate") == "ablate"
    assert _shell.on_path("mlflow models serve -m x", "mlflow", "uvicorn") == "mlflow models serve -m x"


def test_serving_puts_the_environment_on_path_for_uvicorn(venv):
    """`.venv/bin/mlflow models serve` alone fails as MLflow's does ("uvicorn: not found", 127); the hint runs."""
    assert _sh(".venv/bin/mlflow models serve").returncode == 127
    hint = serve_hint(default_uri(), "models:/tiny-linear/1")
    assert hint == "PATH=.venv/bin:$PATH mlflow models serve -m models:/tiny-linear/1 --env-manager local --port 5001"
    done = _sh(hint)
    assert done.returncode == 0 and done.stdout.startswith("uvicorn serves models serve -m models:/tiny-linear/1")
    other = serve_hint("sqlite:////elsewhere/my store.db", "models:/m/2")
    assert other.startswith("MLFLOW_TRACKING_URI='sqlite:////elsewhere/my store.db' PATH=.venv/bin:$PATH mlflow ")


def test_the_end_of_a_run_names_the_commands_as_they_run_here(venv):
    recorded = Console(width=60, record=True, file=io.StringIO())  # narrow: a hint is never wrapped
    _print_next_steps(recorded, "sqlite:////data/runs.db", "tiny", "1", "/data/optuna-journal.log")
    lines = recorded.export_text().splitlines()
    assert lines[0].startswith("See the runs: .venv/bin/mlflow ui --backend-store-uri sqlite:////data/runs.db    ")
    assert lines[1] == "The table:    .venv/bin/ablate report --study tiny --tracking-uri sqlite:////data/runs.db"
    assert lines[2] == "The search:   optuna-dashboard /data/optuna-journal.log (pip install optuna-dashboard)"
    assert resume_hint("ablate run 'my study.toml'") == ".venv/bin/ablate run 'my study.toml'"
    assert _sh(lines[1].removeprefix("The table:    ")).stdout.startswith("ablate report --study tiny")


def test_errors_that_name_a_command_name_it_as_it_runs_here(venv, tmp_path, capsys):
    assert main(["report", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "run `.venv/bin/ablate run STUDY.toml` here first" in capsys.readouterr().err


def test_help_shows_the_first_commands_as_they_run_here(venv):
    from ablate.cli import build_parser

    text = build_parser({name: None for name in ("run", "check", "plan", "report", "export", "followup",
                                                 "schema")}).format_help()
    assert "  .venv/bin/ablate plan studies/linearity.toml      what would run (no training)" in text
    assert "  .venv/bin/mlflow ui                               browse the runs (same folder)" in text


@pytest.mark.skipif(not os.access(Path(sys.executable).parent / "mlflow", os.X_OK), reason="no mlflow beside Python")
def test_the_real_mlflow_hint_runs_without_the_environment_on_path(monkeypatch):
    """This test environment's own mlflow, named as a run's end names it, found by a shell whose PATH lacks it."""
    monkeypatch.setenv("PATH", SYSTEM_PATH)
    done = _sh(f"{_shell.command('mlflow')} --version")
    assert done.returncode == 0 and "version" in done.stdout
