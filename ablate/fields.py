"""The vocabulary schema tables are written in: `option()` and the checks it takes.

A table of a study file is a frozen dataclass whose fields are `option()`s: the field's name
is the key, its type hint the allowed type, its default the default, its metadata one line of
documentation and an optional check. `ablate.spec` validates any such dataclass generically,
so a registry that brings its own table (a model kind in `ablate.models`) writes it with these
and nothing else. Imports nothing of ablate, so every package may import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import MISSING, field
from typing import Any

Check = Callable[[Any], "str | None"]  # None: fine; else what is wrong, e.g. "must be ≥ 1"


def option(default: Any = MISSING, doc: str = "", check: Check | None = None) -> Any:
    """A schema field: its default, one line of documentation and an optional check."""
    metadata = {"doc": doc, "check": check}
    if isinstance(default, dict):  # dataclasses refuse a shared mutable default
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be ≥ {low}"


def above(low: float) -> Check:
    return lambda v: None if v > low else f"must be > {low}"


def fraction_below_one(v: float) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be in [0, 1)"


def identifier(v: str) -> str | None:
    ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v)
    return None if ok else "must be letters, digits, '.', '_' or '-', starting with a letter or digit"


def nonempty(v: tuple) -> str | None:
    return None if v else "must not be empty"


def each_at_least(low: int) -> Check:
    return lambda v: None if all(x >= low for x in v) else f"every entry must be ≥ {low}"


def unique_ints(v: tuple) -> str | None:
    if not v:
        return "must list at least one seed"
    return None if len(set(v)) == len(v) else "must not repeat a seed"


def factory_reference(v: str) -> str | None:
    ok = re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v)
    return None if ok else "must be 'package.module:function'"
