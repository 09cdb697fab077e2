"""A search's winner as an ablation study: the winner's settings as the baseline, one arm per change it made to the
search's base settings undoing that change alone (leave one out), and one arm undoing them all.

A "change" is a group of searched settings that belong together: the same setting of every block (`blocks[1].out`
… `blocks[5].out` are one change, "channel widths"), and a setting searched only under a condition goes with the
setting of its condition (a step schedule's `gamma` with `train.schedule`). A group whose winning values resolve to
the base settings' own is no change, and gets no arm. The study written is checked before it is returned: its
baseline must resolve to the winner's settings exactly, and each arm to the winner's settings with that one change
undone.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from ablate.errors import SpecError
from ablate.spec._grid import axis_layer, format_label
from ablate.spec._schema import Stage, Study
from ablate.spec._space import resolve_point
from ablate.spec._toml import toml_table
from ablate.spec._validate import SETTING_TABLES, item_key, merge_layers

Point = tuple[tuple[str, Any], ...]
BASE_ARM = "base"


@dataclass(frozen=True)
class Change:
    """One change the winner made: the searched settings it is made of, the winner's values and the base's."""

    label: str  # 'blocks.out', 'lr', 'schedule'
    winner: Point
    base: Point  # the same paths, set to what the base settings hold there
    undone: Stage  # the winner's settings with this change undone, as its arm must resolve

    @property
    def arm(self) -> str:
        return f"undo-{self.label}"

    def describe(self) -> str:
        base = dict(self.base)
        return "; ".join(f"{_short(p)} {_shown(v)} → {_shown(base[p])}" if p in base else
                         f"{_short(p)} {_shown(v)}" for p, v in self.winner)


def _shown(value: Any) -> str:
    """A value as a description says it: 4 significant digits (the study file itself keeps every digit)."""
    return f"{value:.4g}" if isinstance(value, float) else format_label(value)


def _short(path: str) -> str:
    return path.split(".", 1)[1] if path.split(".", 1)[0] in SETTING_TABLES else path


def _group_key(path: str) -> str:
    """The change a searched setting belongs to: its path with block numbers taken out."""
    return re.sub(r"\[[0-9]+\]", "", _short(path))


def _groups(study: Study, point: Point) -> dict[str, list[str]]:
    """Change label → the searched paths of the point that make it (a conditional entry joins its condition's)."""
    conditions = {entry.path: entry.when for entry in study.search.space}
    owner: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for path, _ in point:
        if path == "stage":
            continue
        when = conditions.get(path, ())
        label = owner.get(when[0][0]) if when and when[0][0] in owner else _group_key(path)
        owner[path] = label
        groups.setdefault(label, []).append(path)
    return groups


def _same(a: Stage, b: Stage) -> bool:
    return (a.data, a.model, a.train) == (b.data, b.model, b.train)


def _plain(value: Any) -> Any:
    """A resolved setting as TOML can hold it: tables without unset (None) keys, tuples as lists."""
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value) if getattr(value, f.name) is not None}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _lookup(tree: Any, path: str) -> Any:
    """The value at a setting path in merged TOML tables (`model.blocks[3].out`); KeyError when not written."""
    node = tree
    for part in path.split("."):
        name, index = item_key(part) or (part, None)
        node = node[name]
        if index is not None:
            node = node[index - 1]
    return node


def _resolved(stage: Stage, path: str) -> Any:
    """The resolved value at a path; where resolving folded a table-level default into its parts (a CNN's `dropout`
    into every block, leaving it unset), the default the schema gives it."""
    head, *parts = path.split(".")
    node: Any = {"data": stage.data, "model": stage.model, "train": stage.train}[head]
    for part in parts:
        name, index = item_key(part) or (part, None)
        parent, node = node, getattr(node, name)
        if node is None and index is None:
            node = next(f.default for f in fields(parent) if f.name == name)
        if index is not None:
            node = node[index - 1]
    return node


def _base_value(study: Study, tree: dict, base: Stage, path: str) -> Any:
    """What the base settings hold at a path: as written in the study, else as resolved (a default). A table is
    written whole, as resolved: set over the winner's table it must replace every key, not merge with it."""
    try:
        written = _lookup(tree, path)
    except (KeyError, IndexError, TypeError):
        written = None
    value = _plain(_resolved(base, path)) if written is None or isinstance(written, dict) else written
    if value is None:
        raise SpecError(study.path, f'search.space."{path}"', "the base settings leave it unset, and a study file "
                        "cannot unset a key: write the arm that undoes it by hand")
    return value


def winner_changes(study: Study, point: Point) -> list[Change]:
    """The changes a searched point made to the search's base settings (the chosen stage's, if `stage` was
    searched), in the order of the search space."""
    source = _source(study, point)
    base = resolve_point(study, tuple((p, v) for p, v in point if p == "stage"))
    winner = resolve_point(study, point)
    tree = merge_layers([study.top[0], source.layer], study.path)
    changes = []
    for label, paths in _groups(study, point).items():
        undone = resolve_point(study, tuple((p, v) for p, v in point if p not in paths))
        if _same(undone, winner):
            continue  # the winner kept the base's values here
        values = tuple((p, v) for p, v in point if p in paths)
        # A setting inside another of the change (a step schedule's gamma) goes back with it: the table is replaced.
        outer = [p for p in paths if not any(p.startswith((q + ".", q + "[")) for q in paths)]
        changes.append(Change(label, values, tuple((p, _base_value(study, tree, base, p)) for p in outer), undone))
    return changes


def _source(study: Study, point: Point):
    chosen = dict(point).get("stage")
    return next((s for s in study.sources if s.name == chosen), study.sources[0])


def ablation_text(study: Study, point: Point, changes: list[Change], name: str, seeds: tuple[int, ...],
                  header: str, what: str = "The winner") -> str:
    """The TOML of the follow-up ablation study of `point`, whose changes `winner_changes` found (see the module's
    docstring), checked; `what` the point is, for its description (a front point chosen with --point)."""
    if not changes:
        raise SpecError(study.path, "search.space", "the winner is the base settings: there is no change to ablate")
    tree = merge_layers([study.top[0], _source(study, point).layer, axis_layer(point)], study.path)
    raw = tomllib.loads(study.text)
    winner_label = " ".join(f"{_short(p)}={_shown(v)}" for p, v in point)
    info = {"name": name, "design": "ablation", "baseline": "winner", "seeds": list(seeds),
            "description": f"{what} of search '{study.name}' and one arm per change it made, undone."}
    if "dataset" in raw.get("study", {}):
        info["dataset"] = raw["study"]["dataset"]
    winner = resolve_point(study, point)
    for table in ("data", "train"):  # settings the point switched off (momentum under Adam): written off
        tree[table] = {**tree.get(table, {}), **_switched_off(tree.get(table, {}), getattr(winner, table))}
    parts = [header.rstrip() + "\n", toml_table("study", info)]
    parts += [toml_table(table, tree[table]) for table in ("data", "model", "train") if tree.get(table)]
    parts += [toml_table(table, raw[table]) for table in ("execution", "tracking") if isinstance(raw.get(table), dict)]
    parts.append(f"# The winner: {winner_label}\n")
    expected = {"winner": winner}  # what each arm of the written study must resolve to
    for change in changes:
        parts.append(toml_table("arm", {"name": change.arm, "description": f"undo {change.describe()}",
                                        **_arm_layer(change.base, change.undone, winner)}, array=True))
        expected[change.arm] = change.undone
    if len(changes) > 1:  # with one change, undoing it is the base settings already
        every = tuple(item for change in changes for item in change.base)
        base = resolve_point(study, tuple((p, v) for p, v in point if p == "stage"))
        parts.append(toml_table("arm", {"name": BASE_ARM, "description": f"every change undone: the base settings "
                                        f"of '{study.name}'", **_arm_layer(every, base, winner)}, array=True))
        expected[BASE_ARM] = base
    text = "\n".join(parts)
    _check(study, expected, text)
    return text


def _switched_off(written: dict, resolved: Any) -> dict:
    """The plain settings of a table that resolving switched off (momentum written, optimizer Adam): their values as
    resolved, so the written study states what trained instead of a contradiction the parser refuses."""
    return {key: getattr(resolved, key) for key, value in written.items()
            if not isinstance(value, dict | list) and hasattr(resolved, key) and getattr(resolved, key) != value}


def _arm_layer(undo: Point, undone: Stage, winner: Stage) -> dict:
    """An arm's tables: the changed settings set back, and any plain data or train setting that undoing them turns
    back on (momentum again with SGD)."""
    layer = axis_layer(undo)
    for table in ("data", "train"):
        mine, theirs = getattr(undone, table), getattr(winner, table)
        back = {f.name: getattr(mine, f.name) for f in fields(mine)
                if getattr(mine, f.name) != getattr(theirs, f.name) and not is_dataclass(getattr(mine, f.name))
                and not isinstance(getattr(mine, f.name), tuple) and f.name not in layer.get(table, {})}
        if back:
            layer[table] = {**layer.get(table, {}), **back}
    return layer


def _check(study: Study, expected: dict[str, Stage], text: str) -> None:
    """The written study must mean what it says: each arm resolves to the settings it stands for (baseline = winner,
    each undo arm = the winner with one change undone, base = the base settings), on the search's data."""
    from ablate.spec._study import parse_study

    written = parse_study(text, f"<follow-up of {study.path}>")
    if written.info.dataset != study.info.dataset:
        raise SpecError(study.path, "study.dataset",
                        "the follow-up study would train on other data; please report this")
    arms = {stage.name: stage for stage in written.stages}
    for arm, stage in expected.items():
        if arm not in arms or not _same(arms[arm], stage):
            raise SpecError(study.path, "search.space", f"the follow-up arm '{arm}' does not resolve to the settings "
                                                        "it "
                            "stands for; please report this with the study file")
