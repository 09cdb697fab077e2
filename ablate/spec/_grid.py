"""design = "grid": axes, `[[exclude]]` rules, and the points they make, each resolved to one arm's settings."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ablate import datasets
from ablate.errors import SpecError, did_you_mean
from ablate.spec._arms import ArmSource, naming
from ablate.spec._schema import Stage, StudyInfo
from ablate.spec._validate import KINDED, SETTING_TABLES, Context, Layer, resolve, written


@dataclass(frozen=True)
class Grid:
    axes: tuple[tuple[str, tuple[Any, ...]], ...]  # (setting path, values) in file order
    exclude: tuple[dict[str, tuple[Any, ...]], ...]  # each rule: axis → the values it excludes


def _axis_name(path: str) -> str:
    return f'grid."{path}"'


def parse_grid(raw: dict, file: str, max_points: int | None = None, crossed: int = 1) -> Grid:
    """The axes and [[exclude]] rules, checked. `max_points`: the most arms (points × the `crossed` stages) the grid
    may expand into, counted from the axes' lengths before anything is expanded ([study] max_points)."""
    table = raw["grid"]
    if not isinstance(table, dict) or not table:
        raise SpecError(file, "grid", 'must be a table of axes, e.g. "model.dropout" = [0.0, 0.5]')
    axes = []
    for path, values in table.items():
        head = path.split(".", 1)[0]
        if head not in SETTING_TABLES or "." not in path:
            hint = did_you_mean(head, SETTING_TABLES) if "." in path else ""
            raise SpecError(
                file, _axis_name(path),
                f"an axis is a quoted setting path starting with data., train. or model.{hint}"
                " (e.g. \"model.dropout\")",
            )
        if isinstance(values, dict):
            raise SpecError(file, _axis_name(path), 'must be a list of values; quote the dotted path: "model.dropout" '
                                                    '= [0.0, 0.5]')
        if not isinstance(values, list) or not values:
            raise SpecError(file, _axis_name(path), f"must be a non-empty list of values, not {values!r}")
        axes.append((path, tuple(values)))
    if max_points is not None:
        _check_size(axes, crossed, max_points, file)
    for path, values in axes:
        repeated = _first_repeated(values)
        if repeated is not None:
            raise SpecError(file, _axis_name(path), f"lists {repeated[0]!r} twice")
    names = [p for p, _ in axes]
    for a in names:
        for b in names:
            if b.startswith(a + ".") and a not in KINDED:
                raise SpecError(file, _axis_name(b), f"is inside axis \"{a}\"; set it in that axis's tables instead")
    rules = raw.get("exclude", [])
    if not isinstance(rules, list):
        raise SpecError(file, "exclude", "must be an array of tables: write [[exclude]]")
    values_of = dict(axes)
    exclude = []
    for i, rule in enumerate(rules, 1):
        where = f"exclude[{i}]"
        if not isinstance(rule, dict) or not rule:
            raise SpecError(file, where, 'must be a table of axis = value(s), e.g. "model.batchnorm" = true')
        parsed = {}
        for path, wanted in rule.items():
            if path not in values_of:
                raise SpecError(file, f'{where}."{path}"', f"is not a grid axis{did_you_mean(path, names)}; axes: "
                                                           f"{', '.join(names)}")
            wanted = tuple(wanted) if isinstance(wanted, list) else (wanted,)
            for value in wanted:
                if value not in values_of[path]:
                    listed = ", ".join(map(repr, values_of[path]))
                    raise SpecError(file, f'{where}."{path}"', f"{value!r} is not a value of this axis; it takes: "
                                                               f"{listed}")
            parsed[path] = wanted
        exclude.append(parsed)
    return Grid(tuple(axes), tuple(exclude))


def grid_size(axes: list[tuple[str, tuple[Any, ...]]]) -> int:
    """How many points the axes make, before [[exclude]]: the product of their lengths (nothing is expanded)."""
    return math.prod(len(values) for _, values in axes)


def _check_size(axes: list[tuple[str, tuple[Any, ...]]], crossed: int, max_points: int, file: str) -> None:
    points = grid_size(axes)
    if points * crossed <= max_points:
        return
    lengths = " × ".join(f'"{path}" {len(values):,}' for path, values in axes)
    stages = f" × {crossed} stages = {points * crossed:,} arms" if crossed > 1 else ""
    raise SpecError(file, "grid", f"makes {points:,} points ({lengths}){stages}, more than study.max_points = "
                    f"{max_points:,}: list fewer values, or set max_points = {points * crossed} in [study] to "
                    "expand them all")


def _first_repeated(values: tuple[Any, ...]) -> tuple[Any] | None:
    """(the first value listed twice,), or None; equal as Python compares them (1 and 1.0 alike), in linear time
    where values hash (an axis of thousands of numbers), pairwise among the tables and lists."""
    seen: set[Any] = set()
    unhashable: list[Any] = []
    for value in values:
        try:
            if value in seen:
                return (value,)
            seen.add(value)
        except TypeError:
            if value in unhashable:
                return (value,)
            unhashable.append(value)
    return None


def axis_layer(point: tuple[tuple[str, Any], ...]) -> dict:
    """{'model.dropout': 0.5, 'train.schedule': 'step'} → nested tables; whole tables first, then keys inside them."""
    layer: dict = {}
    for path, value in sorted(point, key=lambda item: item[0].count(".")):
        *parents, leaf = path.split(".")
        node = layer
        for depth, part in enumerate(parents):
            child = node.get(part)
            if isinstance(child, str) and ".".join(parents[: depth + 1]) in KINDED:
                child = {"kind": child}
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[leaf] = value
    return layer


def format_label(value: Any) -> str:
    if isinstance(value, dict):
        inner = " ".join(f"{k}={format_label(v)}" for k, v in value.items() if k != "kind")
        return f"{value.get('kind', '')}({inner})" if inner else str(value.get("kind", ""))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(format_label(v) for v in value) + "]"
    return str(value)


def _short_axis_names(paths: list[str]) -> dict[str, str]:
    """'model.dropout' → 'dropout' where the last part alone is unambiguous."""
    leaves = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: leaf if leaves.count(leaf) == 1 else p for p, leaf in zip(paths, leaves)}


def _grid_points(grid: Grid) -> tuple[list[tuple[tuple[str, Any], ...]], int]:
    """Every combination of the axes' values, in file order, minus the excluded; and how many were excluded."""
    paths = [p for p, _ in grid.axes]
    points, excluded = [], 0
    for values in itertools.product(*(v for _, v in grid.axes)):
        point = tuple(zip(paths, values))
        chosen = dict(point)
        if any(all(chosen[p] in wanted for p, wanted in rule.items()) for rule in grid.exclude):
            excluded += 1
            continue
        points.append(point)
    return points, excluded


def owning_axis(path: str, axes: list[str]) -> str | None:
    """The axis that set a key: the longest axis path the key is, or is inside."""
    owners = [a for a in axes if path == a or path.startswith(a + ".")]
    return max(owners, key=len) if owners else None


def axis_origin(paths: list[str], table: str) -> Callable[[str], str | None]:
    """Where a setting an axis wrote is shown in messages: `grid."model.dropout"` (None: not an axis's)."""

    def shown(path: str) -> str | None:
        owner = owning_axis(path, paths)
        return f'{table}."{owner}"' if owner else None

    return shown


def expand_grid(
    grid: Grid, sources: list[ArmSource], top: Layer, info: StudyInfo, file: str
) -> tuple[list[Stage], int]:
    points, excluded = _grid_points(grid)
    if not points:
        raise SpecError(file, "exclude", "excludes every grid point")
    paths = [p for p, _ in grid.axes]
    short = _short_axis_names(paths)

    shown = axis_origin(paths, "grid")

    stages: list[Stage] = []
    used: set[str] = set()
    effective: dict[str, set[str]] = {p: set() for p in paths}  # the values of each axis that took effect somewhere
    first_reason: dict[str, str] = {}
    for source in sources:
        for point in points:
            ctx = Context(file, lenient=True)
            layers = [top, (source.layer, written(source.where)), (axis_layer(point), shown)]
            with naming(source.where, source.name):
                data, model, train = resolve(layers, ctx, source.where or "grid", datasets.get(info.dataset))
            live = []  # the axes that mean something at this point; the others are left out of its name
            for path, value in point:
                reasons = [why for dropped, why in ctx.dropped if owning_axis(dropped, paths) == path]
                if reasons:
                    first_reason.setdefault(path, reasons[0])
                else:
                    effective[path].add(repr(value))
                    live.append(f"{short[path]}={format_label(value)}")
            label = " ".join(live) or "base"
            name = label if len(sources) == 1 else f"{source.name} {label}"
            if name in used:  # two values that print alike (a table spelt two ways): keep arms apart
                name = f"{name} #{len(stages) + 1}"
            used.add(name)
            stages.append(
                Stage(name=name, description=source.description, reference=source.reference, index=len(stages),
                      data=data, model=model, train=train, compare_to=0, point=point, source=source.where)
            )
    for path, _values in grid.axes:
        surviving = {repr(v) for point in points for p, v in point if p == path}  # what [[exclude]] left
        if len(effective[path]) < min(2, len(surviving)):  # at most one of its values ever took effect
            why = first_reason.get(path, "its other values are all excluded by [[exclude]]")
            raise SpecError(file, _axis_name(path), f"has no effect in any grid point: {why}")
    return stages, excluded * len(sources)  # each stage loses the same points

