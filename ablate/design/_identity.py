"""A trial's identity: the hash of its resolved settings, and settings as flat, printable values."""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from ablate.spec import TrialSettings

HASH_LENGTH = 12


def settings_hash(settings: TrialSettings) -> str:
    """A stable identity: sha256 of the canonical JSON of the resolved settings that differ from the schema's
    defaults — so a setting added to ablate later, with a default that keeps the old behaviour, leaves the
    identity of finished work unchanged."""
    canonical = json.dumps(identity(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def identity(value: Any) -> Any:
    """Settings as plain data, without the fields at their default (a table's `kind` is always kept)."""
    if is_dataclass(value):
        kept = {}
        for f in fields(value):
            current = getattr(value, f.name)
            if f.default is not MISSING:
                default = f.default
            elif f.default_factory is not MISSING:
                default = f.default_factory()
            else:
                default = MISSING
            if f.name == "kind" or default is MISSING or current != default:
                kept[f.name] = identity(current)
        return kept
    if isinstance(value, tuple | list):
        return [identity(v) for v in value]
    if isinstance(value, dict):
        return {k: identity(v) for k, v in value.items()}
    return value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'hidden': [256]}} → {'model.hidden': [256]}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def format_value(value: Any) -> str:
    """Settings as a TOML reader would write them: [256], true, 0.001, mse."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if value is None:
        return "none"
    return str(value)

