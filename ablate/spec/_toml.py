"""Writing TOML: the study files ablate writes for a researcher to read, commit and run (tomllib only reads)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


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
