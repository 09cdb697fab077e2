"""Ctrl-C while `ablate` starts: one line and exit 130, not a KeyboardInterrupt traceback out of an import.

The command's first instructions (ablate/__main__.py for `python -m ablate`, the top of ablate/cli.py for the
`ablate` console script) install `exit_interrupted` for SIGINT before anything else is imported; main() hands
Ctrl-C back to Python (`handing_over`) inside the try-block that turns a KeyboardInterrupt into the same line.
Until then nothing has been created, so there is nothing to record or undo: the process ends at once.

Before the first instruction the interpreter itself starts (its `site` module, and the .pth hooks of the
environment, an editable install's among them): a Ctrl-C there is Python's to report, and one that lands before
Python has installed any handler ends the process by the signal (a shell reports 130 for it too).

Only `_signal`, `os`, `sys` and `time` are used here: built in or loaded before any program runs (`signal`
itself imports enum).
"""

import _signal
import os
import sys
import time

EXIT_INTERRUPTED = 130  # ablate.errors.EXIT_INTERRUPTED (not imported: it loads difflib)


def exit_interrupted(signum: int, frame: object) -> None:
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # a second Ctrl-C cannot cut this short
    try:
        os.write(2, b"ablate: interrupted\n")
    except OSError:
        pass
    os._exit(EXIT_INTERRUPTED)


def install() -> None:
    """From here until main() takes over, Ctrl-C ends the process with one line (main thread only, as Python
    allows; a SIGINT that is ignored, e.g. under nohup, stays ignored)."""
    try:
        if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
            _signal.signal(_signal.SIGINT, exit_interrupted)
    except ValueError:  # not the main thread
        pass


def install_for_command() -> None:
    """ablate/__init__.py's first instruction — the first of ablate's code any command runs, before the import
    machinery goes on to ablate.cli or ablate.__main__: the handler, when this process is the command
    (`ablate …` or `python -m ablate …`); a program that imports ablate keeps its own Ctrl-C."""
    command = getattr(sys, "orig_argv", [])[1:3]  # the interpreter's own command line: not a worker's sys.argv,
    script = os.path.basename(command[0]).split(".")[0].removesuffix("-script") if command else ""  # which spawn copies
    if command == ["-m", "ablate"] or script == "ablate":
        install()


def install_for_console_script() -> None:
    """ablate/cli.py's first instruction: the handler, when the process is the `ablate` console script (whose
    first import is ablate.cli); a program or test that imports ablate.cli keeps its own Ctrl-C."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    if script.split(".")[0].removesuffix("-script") == "ablate":  # ablate, ablate.exe, ablate-script.py
        install()


GRACE_SECONDS = 2.0  # a Ctrl-C this soon after the one main() is handling is the same press


def handing_over() -> None:
    """main() is running: Ctrl-C raises KeyboardInterrupt again (`raise_once`), which main() turns into the same
    line; `ablate run` puts its own handlers in place while it runs (ablate.run's signals)."""
    try:
        if _signal.getsignal(_signal.SIGINT) is exit_interrupted:
            _signal.signal(_signal.SIGINT, raise_once)
    except ValueError:
        pass


_pressed: list[float] = []


def raise_once(signum: int, frame: object) -> None:
    """KeyboardInterrupt, as Python's own handler raises it; but a second press within GRACE_SECONDS of the first
    is taken as the same one (an impatient double Ctrl-C): raised again, it would land halfway through the first
    one's unwinding and print a traceback instead of main()'s line. After that a press interrupts again (library
    code may have swallowed the first)."""
    now = time.monotonic()
    if _pressed and now - _pressed[-1] < GRACE_SECONDS:
        return
    _pressed.append(now)
    raise KeyboardInterrupt


def forget_unhandled_interrupt() -> None:
    """main() handled the KeyboardInterrupt and is about to exit 130: make sure the interpreter does not turn that
    into death by SIGINT. CPython marks a KeyboardInterrupt "unhandled" whenever it escapes code run by exec() of a
    string — dataclasses and namedtuples build their methods so, in every import that defines one — even when the
    program catches it later, and at exit it then kills itself with SIGINT instead of the exit code. The mark is
    a C global on 3.11 (reset here); where it is not reachable the process still ends by SIGINT, which a shell also
    reports as 130."""
    try:
        import ctypes

        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (ImportError, ValueError, AttributeError, OSError):
        pass
