"""Arms as written: ladder stages, an ablation's baseline and arms, the stages a grid or a search starts from."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ablate.errors import SpecError, did_you_mean
from ablate.fields import identifier
from ablate.spec._schema import StudyInfo
from ablate.spec._validate import SETTING_TABLES, Context, coerce, join_path

ARM_KEYS = ("name", "description", "reference", "model", "data", "train")
TOP_KEYS = ("study", "data", "train", "model", "stage", "arm", "grid", "exclude", "execution", "tracking", "stats",
            "search")


@dataclass(frozen=True)
class ArmSource:
    """A stage or arm as written: its labels and its settings layer."""

    name: str
    description: str
    reference: float | None
    layer: dict
    where: str  # 'stage[2]', 'arm[1]', or '' for the top-level settings


@contextmanager
def naming(where: str, name: str) -> Iterator[None]:
    """Errors inside a stage's or arm's table name it as the user knows it: `stage[4] ("linear-mse").model.kind`.

    Only the message changes: the error's `path` stays the key path (`stage[4].model.kind`), which tools and
    tests match on.
    """
    try:
        yield
    except SpecError as exc:
        if not where or not (exc.path == where or exc.path.startswith((where + ".", where + "["))):
            raise
        named = SpecError(exc.file, f'{where} ("{name}"){exc.path[len(where):]}', exc.message)
        named.path = exc.path  # SpecError has one path for both: keep the key path, show the name
        raise named from None


def _arm_source(raw: Any, index: int, table: str, file: str) -> ArmSource:
    path = f"{table}[{index + 1}]"
    if not isinstance(raw, dict):
        raise SpecError(file, path, f"must be a table ([[{table}]])")
    name = raw.get("name")  # first, so the errors below can name the table
    if name is None:
        raise SpecError(file, join_path(path, "name"), f"is required: every {table} needs a name")
    if not isinstance(name, str) or identifier(name):
        raise SpecError(file, join_path(path, "name"), f"{identifier(str(name))} (got {name!r})")
    with naming(path, name):
        return _arm_body(raw, name, path, table, file)


def _arm_body(raw: dict, name: str, path: str, table: str, file: str) -> ArmSource:
    for key in raw:
        if key not in ARM_KEYS:
            allowed = ", ".join(ARM_KEYS)
            raise SpecError(file, join_path(path, key), f"unknown key{did_you_mean(key, ARM_KEYS)}; a {table} allows: "
                                                        f"{allowed}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise SpecError(file, join_path(path, "description"), f"must be a string, not {description!r}")
    reference = raw.get("reference")
    if reference is not None:
        reference = coerce(reference, float, Context(file), join_path(path, "reference"))
        if not 0.0 <= reference <= 100.0:
            raise SpecError(file, join_path(path, "reference"), "is a test accuracy in percent, in [0, 100] (got "
                                                                f"{reference})")
    layer = {key: raw[key] for key in SETTING_TABLES if key in raw}
    return ArmSource(name, description, reference, layer, path)


def arm_sources(raw: dict, info: StudyInfo, file: str) -> list[ArmSource]:
    """The arms as written, by design: ladder stages; ablation baseline + arms; grid stages (or one base)."""
    design = info.design
    table = "arm" if design == "ablation" else "stage"
    for other, allowed in (("stage", ("ladder", "grid", "search")), ("arm", ("ablation",)), ("grid", ("grid",)),
                           ("exclude", ("grid",)), ("search", ("search",))):
        if other in raw and design not in allowed:
            shown = f"[[{other}]]" if other in ("stage", "arm", "exclude") else f"[{other}]"
            raise SpecError(file, other, f"{shown} belongs to design {' or '.join(map(repr, allowed))}, not '{design}' "
                                         "(study.design)")
    listed = raw.get(table)
    if listed is not None and not isinstance(listed, list):
        raise SpecError(file, table, f"must be an array of tables: write [[{table}]], not [{table}]")
    sources = [_arm_source(s, i, table, file) for i, s in enumerate(listed or [])]
    if design == "ablation":
        if not sources:
            raise SpecError(file, "arm", "is required: an ablation needs at least one [[arm]] beside the baseline")
        name = info.baseline or "baseline"
        if identifier(name):
            raise SpecError(file, "study.baseline", f"{identifier(name)} (got {name!r})")
        sources.insert(0, ArmSource(name, "the top-level settings", None, {}, ""))
    elif design in ("grid", "search"):
        if design not in raw:
            example = ('"model.dropout" = [0.0, 0.5]' if design == "grid"
                       else '[search.space] "train.lr" = { low = 1e-4, high = 1e-2, log = true }')
            raise SpecError(file, design, f"is required for design '{design}', e.g. {example}")
        if not sources:
            sources = [ArmSource("base", "", None, {}, "")]
    elif not sources:
        raise SpecError(file, "stage", "is required: at least one [[stage]] table")
    seen: dict[str, str] = {}
    for source in sources:
        if source.name in seen:
            first = seen[source.name] or "the baseline"
            raise SpecError(file, f"{source.where}.name", f"'{source.name}' is already the name of {first}")
        seen[source.name] = source.where
    return sources

