"""The generic validator: TOML tables → schema dataclasses, layers merged, every error at the user's key path.

Nothing here knows a particular table: a table's keys, types, defaults and checks come from
its dataclass (ablate.fields), and a "kinded" table (a model, a schedule) picks its dataclass
by its `kind`. Errors name the key path as the user wrote it — a stage's table, a grid axis,
a search space entry — which `Context` tracks while layers are merged.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import Any, Literal

from ablate.datasets import Dataset
from ablate.errors import SpecError, did_you_mean
from ablate.models import MODEL_KINDS, ModelSpec
from ablate.spec._schema import (
    SCHEDULE_KINDS,
    ConstantSchedule,
    CosineSchedule,
    DataSettings,
    TrainSettings,
    WarmupCosineSchedule,
)

# Tables whose allowed keys depend on their `kind`; a layer naming another kind replaces them.
KINDED: dict[str, dict[str, type]] = {"model": MODEL_KINDS, "train.schedule": SCHEDULE_KINDS}
SETTING_TABLES: dict[str, Any] = {"data": DataSettings, "train": TrainSettings, "model": ModelSpec}


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


AXIS_PREFIXES = ("grid.", "search.space.")  # where settings written by a grid axis or a search space are shown


@dataclass
class Context:
    """Resolution state: where the user wrote each key, so errors name the user's own key path."""

    file: str
    origins: dict[str, str] = field(default_factory=dict)  # canonical path → path as written
    lenient: bool = False  # a grid point: what its axes set that does not apply is dropped, not an error
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (canonical path, why)

    def at(self, path: str) -> str:
        owners = [c for c in self.origins if path == c or path.startswith((c + ".", c + "["))]
        if not owners:
            return path
        best = max(owners, key=len)
        shown = self.origins[best]
        return shown if shown.startswith(AXIS_PREFIXES) else shown + path[len(best) :]

    def error(self, path: str, message: str) -> SpecError:
        return SpecError(self.file, self.at(path), message)

    def from_axis(self, path: str) -> bool:
        return self.lenient and self.at(path).startswith(AXIS_PREFIXES)


def kinds_of(tp: Any) -> dict[str, type] | None:
    """The kind → class map of a union of kinded tables (models, schedules); None for other types."""
    if typing.get_origin(tp) not in (types.UnionType, typing.Union):
        return None
    members = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(members) > 1 and all(is_dataclass(m) and "kind" in {f.name for f in fields(m)} for m in members):
        return {m.kind: m for m in members}
    return None


def describe_type(tp: Any) -> str:
    """How a type reads in an error message."""
    kinds = kinds_of(tp)
    if kinds:
        return f"a kind name or a table with `kind` ({', '.join(map(repr, kinds))})"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(describe_type(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return "a list of tables" if is_dataclass(item) else f"a list of {_PLURAL.get(item, 'values')}"
    if is_dataclass(tp):
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}.get(
        tp, str(tp)
    )


_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def coerce(value: Any, tp: Any, ctx: Context, path: str) -> Any:
    """Check a TOML value against a type hint; return it in canonical form (ints as floats, lists as tuples)."""
    kinds = kinds_of(tp)
    if kinds is not None:
        return _coerce_kinded(value, kinds, ctx, path)
    origin = typing.get_origin(tp)
    wrong = ctx.error(path, f"must be {describe_type(tp)}, not {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
            raise ctx.error(path, f"{value!r} is not allowed{hint}; allowed: {', '.join(map(repr, allowed))}")
        return value
    if origin in (types.UnionType, typing.Union):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        tables = [m for m in members if is_dataclass(m)]
        if len(members) == 1 or (isinstance(value, dict) and len(tables) == 1):  # one reading: its errors, precise
            return coerce(value, members[0] if len(members) == 1 else tables[0], ctx, path)
        for member in members:  # e.g. "auto" or [0, 2]: the first reading that fits
            try:
                return coerce(value, member, ctx, path)
            except SpecError:
                continue
        named = [m for m in members if typing.get_origin(m) is Literal]
        if isinstance(value, str) and named:  # a misspelt name: say which names there are, and the closest
            coerce(value, named[0], ctx, path)
        raise wrong
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise wrong
        item = typing.get_args(tp)[0]
        return tuple(coerce(v, item, ctx, f"{path}[{i + 1}]") for i, v in enumerate(value))
    if is_dataclass(tp):
        return build(tp, check_table(value, tp, ctx, path), ctx, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise wrong
        return float(value)
    if tp in (str, dict):
        if not isinstance(value, tp):
            raise wrong
        return value
    raise TypeError(f"schema type {tp!r} is not supported")


def _coerce_kinded(value: Any, kinds: dict[str, type], ctx: Context, path: str) -> Any:
    label = path.rsplit(".", 1)[-1]
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, dict):
        raise ctx.error(path, f"must be a kind name or a table with `kind`, not {value!r}")
    kind = value.get("kind")
    allowed = ", ".join(kinds)
    if kind is None:
        raise ctx.error(join_path(path, "kind"), f"is required (in [{path}] or the stage); allowed: {allowed}")
    if kind not in kinds:
        hint = did_you_mean(str(kind), kinds)
        raise ctx.error(join_path(path, "kind"), f"unknown {label} kind {kind!r}{hint}; allowed: {allowed}")
    cls = kinds[kind]
    built = build(cls, check_table(value, cls, ctx, path, f"{label} kind '{kind}'", kinds), ctx, path)
    # A kind whose table has table-level defaults for its parts folds them in, so equal networks hash equal.
    return built.resolved() if hasattr(built, "resolved") else built


def _unknown_key(key: str, cls: type, owner: str, kinds: dict[str, type] | None) -> str:
    known = [f.name for f in fields(cls)]
    allows = f"{owner} allows: {', '.join(known)}"
    elsewhere = [k for k, c in (kinds or {}).items() if key in {f.name for f in fields(c)}]
    if elsewhere:
        label, kind = owner.split(" kind ")
        owners = ", ".join(map(repr, elsewhere))
        return (f"applies only to {label} kind{'s' if len(elsewhere) > 1 else ''} {owners} "
                f"({label} kind is {kind}); {allows}")
    return f"unknown key{did_you_mean(key, known)}; {allows}"


def check_table(
    raw: Any, cls: type, ctx: Context, path: str, what: str = "", kinds: dict[str, type] | None = None
) -> dict[str, Any]:
    """Validate the keys present in one TOML table against a schema class (missing keys allowed)."""
    if not isinstance(raw, dict):
        raise ctx.error(path, f"must be a table, not {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    extra = getattr(cls, "EXTRA_KEYS", None)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = join_path(path, key)
        if extra and (key not in known or key == extra):
            if key == extra and not isinstance(value, dict):
                raise ctx.error(key_path, f"must be a table, not {value!r}")
            arguments = value if key == extra else {key: value}
            for name, argument in arguments.items():
                if name in out.get(extra, {}):
                    raise ctx.error(join_path(path, name), f"is given twice (as a key and inside `{extra}`)")
                if not _plain(argument):
                    raise ctx.error(join_path(path, name), "must be a string, number, boolean, list or table, not "
                                                           f"{argument!r}")
            out.setdefault(extra, {}).update(arguments)
            continue
        if key not in known:
            why = _unknown_key(key, cls, what or f"[{path}]", kinds)
            # Dropped only when another axis set the kind: inside one axis's own table it is the user's mistake.
            if kinds and ctx.from_axis(key_path) and ctx.at(key_path) != ctx.at(join_path(path, "kind")):
                ctx.dropped.append((key_path, why))
                continue
            raise ctx.error(key_path, why)
        coerced = coerce(value, hints[key], ctx, key_path)
        check = known[key].metadata.get("check")
        problem = check(coerced) if check else None
        if problem:
            raise ctx.error(key_path, f"{problem} (got {value!r})")
        out[key] = coerced
    return out


def _plain(value: Any) -> bool:
    """A TOML value that JSON can carry (no dates and times): a custom model's keyword arguments are hashed."""
    if isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    return False


def build(cls: type, values: dict[str, Any], ctx: Context, path: str) -> Any:
    for f in fields(cls):
        if f.default is MISSING and f.default_factory is MISSING and f.name not in values:
            shown = ctx.at(join_path(path, f.name))
            raise SpecError(ctx.file, shown, "is required" if shown.endswith(f.name) else f"needs `{f.name}`")
    return cls(**values)


# A key `blocks[3]` (1-based, as messages number items) sets inside one item of a list a lower layer wrote: a grid
# axis or a searched setting `"model.blocks[3].out"` changes one block's width and keeps the others.
_ITEM_KEY = re.compile(r"^(?P<name>[A-Za-z_]\w*)\[(?P<index>[0-9]+)\]$")


def item_key(key: str) -> tuple[str, int] | None:
    """'blocks[3]' → ('blocks', 3); None for a plain key."""
    found = _ITEM_KEY.match(key)
    return (found["name"], int(found["index"])) if found else None


def _overlay(tree: dict, ctx: Context, layer: dict, shown: Callable[[str], str | None], prefix: str = "") -> None:
    """Deep-merge one layer of TOML tables into the tree, recording where each key was written.

    A kinded table (model, schedule) naming another kind replaces the one below instead of merging.
    """
    origins = ctx.origins
    for key, value in layer.items():
        path = join_path(prefix, key)
        if item_key(key):
            _overlay_item(tree, ctx, key, value, shown, prefix)
            continue
        if path in KINDED and isinstance(value, str):
            value = {"kind": value}
        old = tree.get(key)
        merges = isinstance(value, dict) and isinstance(old, dict)
        if merges and path in KINDED and value.get("kind", old.get("kind")) != old.get("kind"):
            merges = False
        if not merges:
            for canon in [c for c in origins if c.startswith((path + ".", path + "["))]:
                del origins[canon]
            tree[key] = {} if isinstance(value, dict) else value
        where = shown(path)
        if where is not None:
            origins[path] = where
        if isinstance(value, dict):
            _overlay(tree[key], ctx, value, shown, path)


def _overlay_item(
    tree: dict, ctx: Context, key: str, value: Any, shown: Callable[[str], str | None], prefix: str
) -> None:
    """`blocks[3] = { out = 12 }`: merge into the third item of the list below (a copy; lower layers keep theirs)."""
    name, index = item_key(key)
    path = join_path(prefix, key)
    # An axis `model.blocks[2].out` writes {"blocks[2]": {"out": …}}: name it by its own path.
    leaf = join_path(path, next(iter(value))) if isinstance(value, dict) and value else path
    where = shown(path) or shown(leaf) or path
    items = tree.get(name)
    problem = None
    if not isinstance(items, list | tuple):
        problem = f"sets an item of `{join_path(prefix, name)}`, which no layer below writes as a list"
    elif not 1 <= index <= len(items):
        problem = f"`{join_path(prefix, name)}` has {len(items)} items, numbered from 1"
    if problem and ctx.lenient and (shown(path) or shown(leaf)):  # a grid point or searched point of another stage
        ctx.dropped.append((leaf, problem))
        return
    if problem:
        raise SpecError(ctx.file, where, problem)
    items = list(items)
    tree[name] = items
    if shown(path) is not None:
        ctx.origins[path] = shown(path)
    if isinstance(value, dict) and isinstance(items[index - 1], dict):
        items[index - 1] = dict(items[index - 1])
        _overlay(items[index - 1], ctx, value, shown, path)
    else:
        items[index - 1] = value


def _meaningless(train: TrainSettings) -> list[tuple[str, str, str, Any]]:
    """(setting, the setting that makes it meaningless, why, its off value) for contradictory settings."""
    found = []
    if train.optimizer != "sgd":
        why = f"applies only to optimizer 'sgd' (optimizer is '{train.optimizer}')"
        found += [(key, "optimizer", why, off) for key, off in (("momentum", 0.0), ("nesterov", False))
                  if getattr(train, key) != off]
    elif train.nesterov and train.momentum == 0:
        found.append(("nesterov", "momentum", "needs momentum > 0 (as torch.optim.SGD does)", False))
    if train.loss != "cross_entropy" and train.label_smoothing:
        found.append(("label_smoothing", "loss", f"applies only to loss 'cross_entropy' (loss is '{train.loss}')", 0.0))
    return found


def _settle_contradictions(train: TrainSettings, ctx: Context) -> TrainSettings:
    """Reject a contradiction the user wrote; where a grid axis made it, the meaningless setting is off (a no-op)."""
    for key, cause, why, off in _meaningless(train):
        if ctx.from_axis(f"train.{key}") or ctx.from_axis(f"train.{cause}"):
            train = replace(train, **{key: off})
            ctx.dropped.append((f"train.{key}", why))
        else:
            if ctx.at(f"train.{cause}") != f"train.{cause}":  # set somewhere else than the key: say where
                why += f"; {cause} is set at {ctx.at(f'train.{cause}')}"
            raise ctx.error(f"train.{key}", why)
    schedule = train.schedule
    if isinstance(schedule, CosineSchedule | WarmupCosineSchedule) and schedule.min_lr > train.lr:
        raise ctx.error("train.schedule.min_lr", f"must be ≤ train.lr ({train.lr:g}): the schedule decays to it")
    if isinstance(schedule, WarmupCosineSchedule) and schedule.warmup_epochs >= train.epochs:
        raise ctx.error("train.schedule.warmup_epochs", f"must be < train.epochs ({train.epochs}), or no cosine phase "
                                                        "is left")
    return train


def _check_limits(dataset: Dataset, data: DataSettings, ctx: Context) -> None:
    if data.val_size >= dataset.train_size:
        raise ctx.error("data.val_size", f"must be < {dataset.train_size}, the training set's size")
    room = dataset.train_size - data.val_size
    if data.train_limit is not None and data.train_limit > room:
        raise ctx.error("data.train_limit", f"must be ≤ {room} (training set minus validation)")
    if data.test_limit is not None and data.test_limit > dataset.test_size:
        raise ctx.error("data.test_limit", f"must be ≤ {dataset.test_size}, the test set's size")


Layer = tuple[dict, Callable[[str], "str | None"]]


def resolve(
    layers: list[Layer], ctx: Context, where: str, dataset: Dataset
) -> tuple[DataSettings, ModelSpec, TrainSettings]:
    """Merge the layers (top level, stage or arm, grid point) and validate the result as one trial's settings."""
    # A kinded table with a default starts as that kind, so a key written without `kind` is checked against it.
    tree: dict[str, Any] = {"train": {"schedule": {"kind": ConstantSchedule.kind}}}
    for layer, shown in layers:
        _overlay(tree, ctx, layer, shown)
    data = coerce(tree.get("data", {}), DataSettings, ctx, "data")
    train = coerce(tree.get("train", {}), TrainSettings, ctx, "train")
    if "model" not in tree:
        raise SpecError(ctx.file, f"{where}.model.kind", f"is required (in [model] or the {where.split('[')[0]}); "
                                                         f"allowed: {', '.join(MODEL_KINDS)}")
    model = coerce(tree["model"], ModelSpec, ctx, "model")
    train = _settle_contradictions(train, ctx)
    _check_limits(dataset, data, ctx)
    return data, model, train


def merge_layers(layers: list[dict], file: str) -> dict:
    """TOML layers merged as `resolve` merges them, before any validation: the tables a study file would write."""
    tree: dict[str, Any] = {}
    ctx = Context(file)
    for layer in layers:
        _overlay(tree, ctx, layer, lambda path: None)
    return tree


def written(prefix: str) -> Callable[[str], str]:
    return lambda path: f"{prefix}.{path}" if prefix else path


def model_from_dict(table: dict[str, Any], where: str = "model") -> ModelSpec:
    """A model table as a resolved TrialSettings wrote it (dataclasses.asdict, through JSON) back into its spec: a
    saved model's ablate.json rebuilds the network with it. Unset switches (None) are left out, as unwritten."""
    def written_only(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: written_only(v) for k, v in value.items() if v is not None}
        return [written_only(v) for v in value] if isinstance(value, list) else value

    return coerce(written_only(table), ModelSpec, Context(where), "model")
