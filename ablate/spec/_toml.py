"""TOML: reading a study file (tomllib, with its errors and limits said as one line), and writing the study files
ablate writes for a researcher to read, commit and run (tomllib only reads)."""

from __future__ import annotations

import json
import math
import re
import tomllib
from typing import Any

from ablate.errors import SpecError

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

# How deep a study file may nest arrays and tables. A study needs a few levels (a grid axis of lists of blocks is
# five); tomllib recurses per level and fails with a RecursionError a few hundred levels down, and so would the
# validator, the hashing and the printing of a value nested that deep.
MAX_DEPTH = 32


def read_toml(text: str, file: str) -> dict[str, Any]:
    """A study file's tables; SpecError for a syntax error (at file:line:column) or nesting deeper than MAX_DEPTH."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, file) from None
    except RecursionError:
        line = _deep_line(text)
        raise SpecError(f"{file}:{line}" if line else file, "",
                        f"arrays or inline tables nest more than {MAX_DEPTH} levels deep; a study needs a few"
                        ) from None
    _check_depth(raw, file)
    return raw


def _syntax_error(exc: tomllib.TOMLDecodeError, file: str) -> SpecError:
    """Put tomllib's '(at line L, column C)' where editors look for it: file:L:C."""
    text = str(exc)
    found = re.search(r"\(at line (\d+), column (\d+)\)", text)
    if found:
        message = text[: found.start()].strip()
        return SpecError(f"{file}:{found.group(1)}:{found.group(2)}", "", f"TOML syntax error: {message}")
    return SpecError(file, "", f"TOML syntax error: {text}")


def _check_depth(raw: dict[str, Any], file: str) -> None:
    """Walk the parsed tables without recursing; the first value nested deeper than MAX_DEPTH is an error at its
    key path (shortened: a path that deep is long)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(raw, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            shown = f"{_path_text(path[:6])} … {_path_text(path[-2:])}"
            raise SpecError(file, shown,
                            f"nests arrays and tables more than {MAX_DEPTH} levels deep; a study needs a few")
        if isinstance(value, dict):
            stack.extend((v, (*path, str(k))) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (*path, f"[{i + 1}]")) for i, v in enumerate(value))


def _path_text(parts: tuple[str, ...]) -> str:
    text = ""
    for part in parts:
        shown = part if part.startswith("[") else (part if len(part) <= 40 else part[:40] + "…")
        text += shown if part.startswith("[") or not text else "." + shown
    return text


_NESTING = re.compile(r'"""|\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}]')


def _deep_line(text: str) -> int | None:
    """The line where brackets and braces first nest deeper than MAX_DEPTH, strings and comments skipped (the
    parser gave up without saying where); None when the scan does not find it."""
    depth, position = 0, 0
    while (token := _NESTING.search(text, position)) is not None:
        position = token.end()
        mark = token.group()
        if mark in ('"""', "'''"):  # a multi-line string: skip to its end
            end = text.find(mark, position)
            position = len(text) if end < 0 else end + 3
        elif mark in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return text.count("\n", 0, token.start()) + 1
        elif mark in "]}":
            depth = max(0, depth - 1)
    return None


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """One value inline: tables as `{ k = v }`, lists as `[a, b]`; strings JSON-escaped (a TOML basic string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML has no {value}")
        text = repr(value)
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        ordered = sorted(value.items(), key=lambda item: item[0] != "kind")  # a kinded table says its kind first
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in ordered) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_table(name: str, table: dict[str, Any], array: bool = False) -> str:
    """`[name]` (or `[[name]]`) and its keys, every value inline."""
    head = f"[[{name}]]" if array else f"[{name}]"
    return "\n".join([head] + [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]) + "\n"
