"""design = "search": `[search]` settings, the searched space, and a searched point resolved to an arm."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Literal

from ablate import datasets
from ablate.errors import SpecError, did_you_mean
from ablate.fields import above, at_least, option, unique_ints
from ablate.spec._arms import ArmSource
from ablate.spec._grid import axis_layer, axis_origin, format_label, owning_axis
from ablate.spec._objectives import check_objectives
from ablate.spec._schema import Stage, Study, StudyInfo
from ablate.spec._validate import (
    SETTING_TABLES,
    Context,
    build,
    check_table,
    coerce,
    describe_type,
    item_key,
    kinds_of,
    resolve,
    written,
)


def _optional_seeds(v: tuple) -> str | None:
    return unique_ints(v) if v else None


@dataclass(frozen=True)
class SearchSettings:
    trials: int | None = option(
        None, "Optuna trials in all; a second `ablate run` continues up to this count.", at_least(1)
    )
    timeout: float | None = option(None, "Start no new trial after this many seconds of this invocation.", above(0.0))
    objective: Literal["val_accuracy", "val_loss"] = option(
        "val_accuracy", "The validation metric the search optimises (never a test metric), at the last epoch."
    )
    direction: Literal["maximize", "minimize"] | None = option(
        None, "unset: maximize val_accuracy, minimize val_loss."
    )
    objectives: tuple[Literal["val_accuracy", "val_loss", "params", "macs", "train_seconds"], ...] = option(
        (), "Several objectives, instead of `objective`: the validation metric first, then any of params (trainable "
        "parameters), macs (multiply-accumulates per image) and train_seconds; the search finds their Pareto front "
        "and confirms points of it. Optuna's pruners take one objective: the pruner is 'none'."
    )
    directions: tuple[Literal["maximize", "minimize"], ...] = option(
        (), "One per entry of `objectives`; unset: maximize val_accuracy, minimize the others."
    )
    sampler: Literal["tpe", "nsgaii", "random", "cmaes", "gp", "qmc"] = option(
        "tpe", "Optuna sampler, seeded by `seed` (nsgaii: generations of `startup_trials` points, the first at random)."
    )
    pruner: Literal["median", "percentile", "successive-halving", "hyperband", "wilcoxon", "none"] = option(
        "median", "Optuna pruner, fed the objective after every epoch (with several objectives: 'none', the default)."
    )
    seed: int = option(0, "Seed of the sampler, so a search (and its continuation) is reproducible.")
    startup_trials: int = option(5, "Trials before the pruner prunes (and TPE stops sampling at random).", at_least(0))
    warmup_epochs: int = option(1, "Epochs of a trial before the pruner may stop it.", at_least(0))
    confirm_top: int = option(3, "The best configurations re-trained on `confirm_seeds` and tested.", at_least(0))
    confirm_seeds: tuple[int, ...] = option(
        (), "Seeds of the confirm phase; unset: the 3 seeds after the largest of `study.seeds`.", _optional_seeds
    )
    confirm_base: bool = option(
        False, "Also train the unsearched settings (the top-level tables, or the first stage) on `confirm_seeds`, as "
        "the baseline arm each confirmed configuration is compared with, seed for seed."
    )
    max_params: int | None = option(
        None, "A parameter budget: a point whose network has more trainable parameters is rejected before it trains "
        "(as is one whose network does not fit the data); rejected points do not count towards `trials`.", at_least(1)
    )
    max_macs: int | None = option(
        None, "A compute budget: a point whose network needs more multiply-accumulates per image (forward) is "
        "rejected before it trains, as with `max_params`.", at_least(1)
    )

    @property
    def maximize(self) -> bool:
        """Whether the validation objective (the first) is maximised."""
        return self.optuna_directions[0] == "maximize"

    @property
    def objective_names(self) -> tuple[str, ...]:
        """What Optuna is told, in order: the validation metric, then any costs (`objectives`)."""
        return self.objectives or (self.objective,)

    @property
    def several(self) -> bool:
        """A multi-objective search: a Pareto front, not a best trial."""
        return len(self.objective_names) > 1

    @property
    def optuna_directions(self) -> tuple[str, ...]:
        if self.directions:
            return self.directions
        first = self.direction or ("maximize" if self.objective == "val_accuracy" else "minimize")
        return (first,) + ("minimize",) * (len(self.objective_names) - 1)

    @property
    def goal(self) -> str:
        """'maximize val_accuracy', or each objective's direction and the Pareto front it makes."""
        said = ", ".join(f"{d} {o}" for d, o in zip(self.optuna_directions, self.objective_names))
        return f"{said} (a Pareto front)" if self.several else said


@dataclass(frozen=True)
class SpaceEntry:
    """One searched setting: a float or int range, or a list of choices; searched only when `when` holds."""

    path: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        """Choices as Optuna stores them (strings: a choice may be a whole table)."""
        return tuple(format_label(c) for c in self.choices)

    def applies(self, chosen: dict[str, Any]) -> bool:
        return all(path in chosen and chosen[path] in values for path, values in self.when)


@dataclass(frozen=True)
class SearchSpec:
    settings: SearchSettings
    space: tuple[SpaceEntry, ...]
    seeds: tuple[int, ...]  # the search trains each trial with the first; confirm_seeds are fresh ones
    confirm_seeds: tuple[int, ...]


SEARCH_KEYS = tuple(f.name for f in fields(SearchSettings)) + ("space",)
RANGE_KEYS = ("low", "high", "log", "step", "when")
STARTUP_SAMPLERS = ("tpe", "nsgaii", "cmaes", "gp")  # sample at random for their first `startup_trials` trials
STARTUP_PRUNERS = ("median", "percentile")  # prune nothing in their first `startup_trials` trials


def search_warnings(settings: SearchSettings) -> list[str]:
    """'key path: message' for each setting that is valid but leaves the search doing less than it says."""
    trials, startup = settings.trials, settings.startup_trials
    if trials is None or trials > startup:
        return []
    idle = []
    if settings.sampler in STARTUP_SAMPLERS:
        idle.append(f"the {settings.sampler} sampler samples at random for the first {startup} trials, so this is a "
                    "random search")
    if settings.pruner in STARTUP_PRUNERS:
        idle.append(f"the {settings.pruner} pruner never prunes")
    if not idle:
        return []
    return [f"search.trials: {trials} ≤ search.startup_trials ({startup}): {' and '.join(idle)}; "
            f"raise search.trials above {startup} or lower search.startup_trials"]


def _field_type(path: str) -> Any:
    """The schema type of a dotted setting path (any model or schedule kind that has it), or None. A part `blocks[3]`
    is an item of a list of tables."""
    head, *rest = path.split(".")
    types_here = [SETTING_TABLES.get(head)]
    for part in rest:
        name, index = item_key(part) or (part, None)
        found = []
        for tp in types_here:
            candidates = list(kinds_of(tp).values()) if kinds_of(tp) else [tp]
            for cls in candidates:
                if typing.get_origin(cls) in (types.UnionType, typing.Union):
                    cls = next(a for a in typing.get_args(cls) if a is not type(None))
                if is_dataclass(cls) and name in {f.name for f in fields(cls)}:
                    hint = typing.get_type_hints(cls)[name]
                    if index is not None:
                        if typing.get_origin(hint) is not tuple:
                            continue
                        hint = typing.get_args(hint)[0]
                    found.append(hint)
        if not found:
            return None
        types_here = found
    return types_here[0]


def _parse_space_entry(
    path: str, raw: Any, earlier: dict[str, SpaceEntry], stage_names: list[str], file: str
) -> SpaceEntry:
    shown = f'search.space."{path}"'
    if path != "stage":
        head = path.split(".", 1)[0]
        if head not in SETTING_TABLES or "." not in path:
            raise SpecError(file, shown, 'a searched setting is a quoted path starting with data., train. or model., '
                                         'or "stage"')
    when: tuple = ()
    if isinstance(raw, dict) and "when" in raw:
        when = _parse_when(raw["when"], earlier, f"{shown}.when", file)
        raw = {k: v for k, v in raw.items() if k != "when"}
        if "values" in raw:
            raw = raw["values"]
    if isinstance(raw, list):
        if not raw:
            raise SpecError(file, shown, "must list at least one choice")
        repeated = [v for i, v in enumerate(raw) if v in raw[:i]]
        if repeated:
            raise SpecError(file, shown, f"lists {repeated[0]!r} twice")
        if path == "stage":
            unknown = [v for v in raw if v not in stage_names]
            if unknown:
                raise SpecError(file, shown, f"{unknown[0]!r} is not a "
                                             f"stage{did_you_mean(str(unknown[0]), stage_names)}; stages: "
                                             f"{', '.join(stage_names)}")
        return SpaceEntry(path, "categorical", choices=tuple(raw), when=when)
    if not isinstance(raw, dict):
        raise SpecError(file, shown, "must be a list of choices or a range table { low = …, high = … }")
    for key in raw:
        if key not in RANGE_KEYS + ("values",):
            raise SpecError(file, f"{shown}.{key}", f"unknown key{did_you_mean(key, RANGE_KEYS)}; a range allows: "
                                                    f"{', '.join(RANGE_KEYS)}")
    tp = _field_type(path)
    tp = (next((a for a in typing.get_args(tp) if a is not type(None)), tp)
          if typing.get_origin(tp) in (types.UnionType, typing.Union) else tp)
    if tp not in (int, float):
        raise SpecError(file, shown, f"a range needs a numeric setting; {path} is "
                                     f"{'not a setting' if tp is None else describe_type(tp)}")
    for key in ("low", "high"):
        if key not in raw:
            raise SpecError(file, f"{shown}.{key}", "is required")
    ctx = Context(file)
    low, high = (coerce(raw[k], tp, ctx, f"{shown}.{k}") for k in ("low", "high"))
    log = coerce(raw.get("log", False), bool, ctx, f"{shown}.log")
    step = coerce(raw["step"], tp, ctx, f"{shown}.step") if "step" in raw else None
    if low >= high:
        raise SpecError(file, shown, f"low must be < high (got {low} ≥ {high})")
    if log and low <= 0:
        raise SpecError(file, f"{shown}.low", f"must be > 0 on a log scale (got {low})")
    if step is not None and (step <= 0 or (log and tp is float)):
        raise SpecError(file, f"{shown}.step", "must be > 0, and a float range cannot have both step and log")
    return SpaceEntry(path, "int" if tp is int else "float", low=low, high=high, log=log, step=step, when=when)


def _parse_when(raw: Any, earlier: dict[str, SpaceEntry], shown: str, file: str) -> tuple:
    if not isinstance(raw, dict) or not raw:
        raise SpecError(file, shown, 'must be a table of earlier searched settings and their values, e.g. { '
                                     '"train.schedule" = "step" }')
    conditions = []
    for path, wanted in raw.items():
        if path not in earlier:
            listed = ", ".join(earlier) or "none yet"
            raise SpecError(file, f'{shown}."{path}"',
                            f"a condition must name a setting searched above it{did_you_mean(path, earlier)}; searched "
                            f"so far: {listed}")
        wanted = tuple(wanted) if isinstance(wanted, list) else (wanted,)
        entry = earlier[path]
        for value in wanted:
            ok = value in entry.choices if entry.kind == "categorical" else (
                isinstance(value, int | float) and entry.low <= value <= entry.high)
            if not ok:
                raise SpecError(file, f'{shown}."{path}"', f"{value!r} is not a value {path} can take")
        conditions.append((path, wanted))
    return tuple(conditions)


def parse_search(raw: dict, info: StudyInfo, sources: list[ArmSource], file: str) -> SearchSpec:
    table = raw["search"]
    if not isinstance(table, dict):
        raise SpecError(file, "search", "must be a table")
    for key in table:
        if key not in SEARCH_KEYS:
            raise SpecError(file, f"search.{key}", f"unknown key{did_you_mean(key, SEARCH_KEYS)}; [search] allows: "
                                                   f"{', '.join(SEARCH_KEYS)}")
    ctx = Context(file)
    settings = build(
        SearchSettings,
        check_table({k: v for k, v in table.items() if k != "space"}, SearchSettings, ctx, "search"),
        ctx,
        "search",
    )
    if settings.trials is None and settings.timeout is None:
        raise SpecError(file, "search.trials", "is required (or search.timeout): how long the search runs")
    settings = check_objectives(settings, table, file)
    space_raw = table.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise SpecError(file, "search.space", 'is required: the settings to search, e.g. "train.lr" = { low = 1e-4, '
                                              'high = 1e-2, log = true }')
    names = [s.name for s in sources]
    entries: dict[str, SpaceEntry] = {}
    for path, value in space_raw.items():
        entries[path] = _parse_space_entry(path, value, entries, names, file)
    budgeted = [key for key in BUDGETS if getattr(settings, key) is not None]
    if budgeted and settings.sampler in ("gp", "cmaes"):  # they read complete trials only: rejections are invisible
        raise SpecError(file, "search.sampler", f"'{settings.sampler}' does not learn from the points {budgeted[0]} "
                        "rejects (it reads complete trials only) and would keep proposing them; use 'tpe' or 'random'")
    confirm = settings.confirm_seeds or tuple(range(max(info.seeds) + 1, max(info.seeds) + 4))
    overlap = set(confirm) & set(info.seeds)
    if overlap:
        raise SpecError(file, "search.confirm_seeds", f"must be fresh seeds, not the search's ({sorted(overlap)[0]} is "
                                                      "in study.seeds)")
    return SearchSpec(settings, tuple(entries.values()), info.seeds, confirm)


def resolve_point(study: Study, point: tuple[tuple[str, Any], ...], name: str = "", index: int = 0,
                  why: list[str] | None = None) -> Stage:
    """A searched configuration as a Stage: the chosen stage's settings with the assignments on top.

    Assignments that mean nothing for the resolved settings (a schedule parameter under another schedule, a block
    the chosen stage's network does not have) are dropped, as in a grid; the stage keeps only those that took effect
    in `point`, and `why`, when given, gets the reasons for the others.
    """
    chosen = dict(point)
    sources = {s.name: s for s in study.sources}
    source = sources.get(chosen.pop("stage", None), study.sources[0])
    settings = tuple((p, v) for p, v in point if p != "stage")
    paths = [p for p, _ in settings]

    shown = axis_origin(paths, "search.space")

    ctx = Context(study.path, lenient=True)
    layers = [study.top, (source.layer, written(source.where)), (axis_layer(settings), shown)]
    data, model, train = resolve(layers, ctx, source.where or "search", datasets.get(study.info.dataset))
    dropped = {owning_axis(d, paths) for d, _ in ctx.dropped}
    live = tuple((p, v) for p, v in point if p not in dropped)
    if why is not None:
        why.extend(reason for _, reason in ctx.dropped)

    def short(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else format_label(value)

    def key(path: str) -> str:  # 'lr'; a block's setting keeps its block: 'blocks[3].out'
        return path.split(".", 1)[-1] if "[" in path else path.rsplit(".", 1)[-1]

    label = name or (" ".join(f"{key(p)}={short(v)}" for p, v in live) or "base")
    return Stage(name=label, description=source.description, reference=None, index=index, data=data, model=model,
                 train=train, compare_to=0, point=live, source=source.where)


BUDGETS = {"max_params": "parameters", "max_macs": "MACs"}  # [search] key → what it counts
