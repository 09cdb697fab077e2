"""Command line: argument parsing and printing only; the work lives in the library.

`_parser` holds the grammar, `_run` the `run` and `check` commands, `_commands` the others; this module the entry
point (`main`): one message and a documented exit code for every error, Ctrl-C and SIGTERM as one line.
`ablate --help`, `ablate plan` and `ablate schema` import neither torch nor mlflow, so they answer at once; `run`
and `report` import what they need when they start.
"""

from __future__ import annotations

from ablate import _startup

_startup.install_for_console_script()  # first: a Ctrl-C from here on is one line and exit 130 (see there)

import argparse  # noqa: E402 — the imports below come after the handler
import os
import shlex
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from ablate.cli._commands import cmd_export, cmd_followup, cmd_plan, cmd_report, cmd_schema
from ablate.cli._parser import build_parser
from ablate.cli._reference import cli_markdown
from ablate.cli._run import cmd_check, cmd_run, resume_hint
from ablate.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, AblateError

__all__ = ["build_parser", "cli_markdown", "main"]


def _commands() -> dict[str, Callable[[argparse.Namespace], int]]:
    """Each command's function, looked up when the parser is built (so that a test may stand in for one)."""
    return {"run": cmd_run, "check": cmd_check, "plan": cmd_plan, "report": cmd_report, "export": cmd_export,
            "followup": cmd_followup, "schema": cmd_schema}


def main(argv: list[str] | None = None) -> int:
    own_process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    args = argparse.Namespace(debug="--debug" in argv, command=None, command_line="ablate")
    debug_set = False
    try:
        _startup.handing_over()  # Ctrl-C raises KeyboardInterrupt from here on, handled below
        parser = build_parser(_commands())
        args = parser.parse_args(argv)
        args.debug = getattr(args, "debug", False)
        args.own_process = own_process  # the process ends when main returns (not a caller's in-process call)
        args.command_line = "ablate " + " ".join(shlex.quote(a) for a in argv if a != "--debug")
        debug_set = _debug_logging(args.debug)
        _check_paths(args)
        code = args.func(args)
        if own_process and code in (EXIT_INTERRUPTED, EXIT_TERMINATED):  # a run that recorded its interruption
            _startup.forget_unhandled_interrupt()
        return code
    except AblateError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ablate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # before a run could record anything, or a command that records nothing
        if own_process:  # the process ends now: a second Ctrl-C must not cut this line short with a traceback
            import signal

            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _startup.forget_unhandled_interrupt()
        # Which signal it was (a plain KeyboardInterrupt may stand for SIGTERM), when ablate.run's handlers saw one;
        # not imported for the question: a Ctrl-C during the imports would wait a tenth of a second more for it.
        signals = sys.modules.get("ablate.run._signals")
        code = signals.as_interrupted(exc).exit_code if signals is not None else EXIT_INTERRUPTED
        if args.debug:
            traceback.print_exc()
        resume = f"; resume with: {resume_hint(args.command_line)}" if args.command == "run" else ""
        print(f"ablate: {'stopped by SIGTERM' if code != EXIT_INTERRUPTED else 'interrupted'}{resume}", file=sys.stderr)
        return code
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if debug_set and not own_process:  # a caller's in-process call: its environment as it was
            os.environ.pop(DEBUG_ENV, None)


DEBUG_ENV = "ABLATE_DEBUG"  # ablate.tracking's _open reads it (MLflow is not imported here)


def _debug_logging(debug: bool) -> bool:
    """--debug: MLflow's, alembic's and SQLAlchemy's own log records of a store failure are shown, in this process
    and the workers it starts (ablate.tracking's _open quiets them otherwise: ablate reports the failure itself).
    Whether it set the variable."""
    if not debug or os.environ.get(DEBUG_ENV):
        return False
    os.environ[DEBUG_ENV] = "1"
    return True


def _check_paths(args: argparse.Namespace) -> None:
    """Before any command runs: the tracking URI (scheme, form, driver, a looping link; StoreError, exit 3), and the
    file that report or followup writes with --out (a looping link, a folder; exit 2)."""
    from ablate.tracking import store_uri
    from ablate.tracking._uri import check_tracking_uri, symlink_loops

    if "tracking_uri" in args:
        check_tracking_uri(store_uri(args.tracking_uri))  # (an empty one means the default, as it always did)
    out = getattr(args, "out", None)
    if out and args.command in ("report", "followup"):
        path = Path(out)
        if symlink_loops(path):
            raise AblateError(f"--out {out}: is a symbolic link that loops back on itself; remove it or pass another "
                              "--out")
        if path.is_dir():
            example = path / ("table.md" if args.command == "report" else "study.toml")
            raise AblateError(f"--out {out}: is a folder; name the file to write, e.g. --out {example}")
