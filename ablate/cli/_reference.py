"""The command-line reference as markdown, generated from the parser itself, so the manual never drifts from what
`ablate --help` says (docs/reference/cli.md holds it; tests/docs checks that it is current).

Written from the parser's actions rather than from argparse's help text, whose layout changes between Python
versions (3.13 rewrote how an option's metavar is repeated): the same parser gives the same page everywhere."""

from __future__ import annotations

import argparse

from ablate.cli._parser import DESCRIPTION, EPILOG, build_parser


def cli_markdown() -> str:
    """Every command: what it does, its usage and a table of its arguments."""
    parser = build_parser(_NoHandlers())
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in subparsers._choices_actions}
    lines = ["```text", DESCRIPTION.rstrip(), "```", "", _paragraph(EPILOG), "", "Global options: "
             + ", ".join(f"`{a.option_strings[0]}` ({a.help})" for a in _options(parser)) + ".", ""]
    for name, sub in subparsers.choices.items():
        lines += [f"### ablate {name}", "", _paragraph(sub.description or helps.get(name) or ""), "", "```text",
                  _usage(name, sub), "```", ""]
        arguments = sorted(_shown(sub), key=lambda a: bool(a.option_strings))  # the positionals first
        if arguments:
            lines += ["| argument | meaning |", "|---|---|"]
            lines += [f"| {_name(a)} | {_cell(a.help or '')} |" for a in arguments]
            lines.append("")
    return "\n".join(lines)


class _NoHandlers(dict):
    """Handlers for building the parser only: no command runs."""

    def __missing__(self, key):
        return lambda args: 0


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)
            and a.help is not argparse.SUPPRESS]


def _shown(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    """A command's arguments as its help lists them, less --help and --debug (global, said once at the top)."""
    return [a for a in sub._actions if not isinstance(a, argparse._HelpAction)
            and a.help is not argparse.SUPPRESS and a.dest != "debug"]


def _usage(name: str, sub: argparse.ArgumentParser) -> str:
    shown = _shown(sub)
    positionals = [_flag(a) for a in shown if not a.option_strings]
    options = [_flag(a) if a.required else f"[{_flag(a)}]" for a in shown if a.option_strings]
    return " ".join([f"ablate {name}", *positionals, *options])


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:
        return action.metavar or action.dest.upper()
    flag = action.option_strings[-1]
    if action.nargs == 0:
        return flag
    return f"{flag} {_metavar(action)}"


def _metavar(action: argparse.Action) -> str:
    if action.metavar:
        return action.metavar
    if action.choices:
        return "|".join(str(c) for c in action.choices)
    return action.dest.upper()


def _name(action: argparse.Action) -> str:
    return f"`{_flag(action)}`".replace("|", "\\|")  # a table cell: a pipe, even in code, would split it


def _cell(text: str) -> str:
    return text.replace("%%", "%").replace("|", "\\|").replace("\n", " ")


def _paragraph(text: str) -> str:
    return " ".join(text.split())
