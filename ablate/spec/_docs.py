"""The schema as documentation: the reference tables of README.md and `ablate schema` (a test keeps them equal)."""

from __future__ import annotations

import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from ablate.models import MODEL_KINDS, ConvBlock
from ablate.spec._schema import (
    SCHEDULE_KINDS,
    AdaptiveSeeds,
    Augment,
    DataSettings,
    EarlyStopping,
    ExecutionSettings,
    StatsSettings,
    StudyInfo,
    TrackingSettings,
    TrainSettings,
)
from ablate.spec._space import SearchSettings
from ablate.spec._validate import describe_type


def schema_rows(cls: type) -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) rows for the README and `ablate schema`."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in fields(cls):
        if f.default is not MISSING:
            default = _toml_literal(f.default)
        else:
            default = "required" if f.default_factory is MISSING else _toml_literal(f.default_factory())
        rows.append((f.name, describe_type(hints[f.name]), default, f.metadata.get("doc", "")))
    return rows


def _toml_literal(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_literal(v)}" for k, v in value.items()) + "}"
    if is_dataclass(value):  # a default table: its kind name, or {} when every key takes its own default
        return f'"{value.kind}"' if hasattr(value, "kind") else "{}"
    return repr(value)


def schema_tables() -> dict[str, type]:
    """Every documented table, in the order a study file reads."""
    tables: dict[str, type] = {"[study]": StudyInfo, "study.seeds (adaptive)": AdaptiveSeeds, "[data]": DataSettings,
                               "[train]": TrainSettings}
    for kind, cls in SCHEDULE_KINDS.items():
        tables[f'train.schedule kind = "{kind}"'] = cls
    tables["train.early_stopping"] = EarlyStopping
    tables["train.augment"] = Augment
    for kind, cls in MODEL_KINDS.items():
        tables[f'[model] kind = "{kind}"'] = cls
    tables['[model] kind = "cnn": each entry of `blocks`'] = ConvBlock
    tables["[execution]"] = ExecutionSettings
    tables["[tracking]"] = TrackingSettings
    tables["[stats]"] = StatsSettings
    tables["[search]"] = SearchSettings
    return tables


def schema_markdown() -> str:
    """The reference tables of README.md's spec section (a test keeps the two equal)."""
    parts = []
    for title, cls in schema_tables().items():
        parts += [f"`{title}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, kind, default, doc in schema_rows(cls):
            parts.append(f"| `{key}` | {kind} | `{default}` | {doc} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"
