"""A study file → a validated Study: sections, arms, then the design's own tables."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from ablate import datasets
from ablate.errors import AblateError, SpecError, did_you_mean
from ablate.spec._arms import TOP_KEYS, arm_sources, naming
from ablate.spec._grid import expand_grid, parse_grid
from ablate.spec._schema import (
    AdaptiveSeeds,
    DatasetFactory,
    ExecutionSettings,
    Stage,
    StatsSettings,
    Study,
    StudyInfo,
    TrackingSettings,
)
from ablate.spec._space import parse_search, search_warnings
from ablate.spec._survey import check_space_resolves, check_space_trains
from ablate.spec._toml import read_toml
from ablate.spec._validate import SETTING_TABLES, Context, Layer, build, check_table, coerce, resolve, written

# The longest study, stage or arm name: what MLflow names after them must fit every store it supports. The study
# name is the experiment's name (VARCHAR(256) in MLflow's SQL stores, which PostgreSQL, MySQL and SQL Server
# enforce; MLflow itself allows 500) and, with a timestamp (16 characters), its parent runs' names (VARCHAR(250));
# a stage's or arm's name, with its seed, its trial runs' names; `export --register` registers <study>-<arm>
# (VARCHAR(256)). 120 + 1 + 120 fits all of them.
MAX_NAME = 120


def _check_names(raw: dict, file: str) -> None:
    """Names too long for the store, refused before anything else reads them (an error that quoted a name of
    thousands of characters would be as long)."""
    study = raw["study"] if isinstance(raw.get("study"), dict) else {}
    named = [("study.name", study.get("name")), ("study.baseline", study.get("baseline"))]
    for table in ("stage", "arm"):
        if isinstance(raw.get(table), list):
            named += [(f"{table}[{i + 1}].name", item.get("name")) for i, item in enumerate(raw[table])
                      if isinstance(item, dict)]
    for key, name in named:
        if isinstance(name, str) and len(name) > MAX_NAME:
            raise SpecError(file, key, f"is {len(name):,} characters long ('{name[:24]}…'); at most {MAX_NAME}: "
                            "MLflow names its experiment and runs after it, and its SQL stores cap those names at "
                            "250 characters")


def parse_study(text: str, file: str = "<study>") -> Study:
    """Validate a study given as TOML text; raises SpecError naming the key path."""
    raw = read_toml(text, file)
    _check_names(raw, file)
    for key in raw:
        if key not in TOP_KEYS:
            raise SpecError(file, key, f"unknown section{did_you_mean(key, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    if "study" not in raw:
        raise SpecError(file, "study", "is required: a [study] table with at least `name`")
    info = build(StudyInfo, check_table(raw["study"], StudyInfo, Context(file), "study"), Context(file), "study")
    if "max_points" in raw["study"] and info.design != "grid":
        raise SpecError(file, "study.max_points", f"applies only to design 'grid' (study.design is '{info.design}')")
    info = _resolve_dataset(info, file)
    info, adaptive = _adaptive_seeds(info, file)
    execution = coerce(raw.get("execution", {}), ExecutionSettings, Context(file), "execution")
    tracking = coerce(raw.get("tracking", {}), TrackingSettings, Context(file), "tracking")
    stats = coerce(raw.get("stats", {}), StatsSettings, Context(file), "stats")
    common = dict(path=file, text=text, execution=execution, tracking=tracking, stats=stats, adaptive=adaptive)
    top: Layer = ({key: raw[key] for key in SETTING_TABLES if key in raw}, written(""))
    sources = arm_sources(raw, info, file)
    dataset = datasets.get(info.dataset)
    if info.design == "search":
        study = Study(info=info, stages=(), **common, search=parse_search(raw, info, sources, file), top=top,
                      sources=tuple(sources))
        check_space_resolves(study)
        check_space_trains(study)
        return study
    if info.design == "grid":
        grid = parse_grid(raw, file, info.max_points, len(sources))
        stages, excluded = expand_grid(grid, sources, top, info, file)
        _check_baseline(info, stages, file)
        return Study(info=info, stages=tuple(stages), **common, axes=tuple(p for p, _ in grid.axes),
                     excluded=excluded)
    stages: list[Stage] = []
    for index, source in enumerate(sources):
        with naming(source.where, source.name):
            data, model, train = resolve([top, (source.layer, written(source.where))], Context(file),
                                         source.where or "baseline", dataset)
        compare_to = (index - 1 if info.design == "ladder" else 0) if index else None
        stages.append(Stage(name=source.name, description=source.description, reference=source.reference,
                            index=index, data=data, model=model, train=train, compare_to=compare_to,
                            source=source.where))
    _check_baseline(info, stages, file)
    return Study(info=info, stages=tuple(stages), **common)


def _resolve_dataset(info: StudyInfo, file: str) -> StudyInfo:
    """A factory's dataset is called, checked and registered here, once; the study then names it by its key (factory,
    arguments and fingerprint), which every trial's settings carry."""
    if not isinstance(info.dataset, DatasetFactory):
        return info
    try:
        dataset = datasets.from_factory(info.dataset.factory, info.dataset.kwargs)
    except AblateError as exc:
        raise SpecError(file, "study.dataset", str(exc)) from exc
    return replace(info, dataset=dataset.name)


def _adaptive_seeds(info: StudyInfo, file: str) -> tuple[StudyInfo, AdaptiveSeeds | None]:
    """Adaptive seeds: the study's seeds are then all `max` of them (the trials an arm may get, in order), the table
    kept beside; a search's seeds are its own (the search, then `confirm_seeds`), so it takes none."""
    if not isinstance(info.seeds, AdaptiveSeeds):
        return info, None
    adaptive = info.seeds
    if info.design == "search":
        raise SpecError(file, "study.seeds", "adaptive seeds apply to designs 'ladder', 'ablation' and 'grid'; a "
                        "search trains its trials on the first seed and confirms on `search.confirm_seeds`")
    if adaptive.max < adaptive.min:
        raise SpecError(file, "study.seeds.max", f"must be at least min ({adaptive.min}), not {adaptive.max}")
    return replace(info, seeds=adaptive.seeds()), adaptive


def _check_baseline(info: StudyInfo, stages: list[Stage], file: str) -> None:
    names = [s.name for s in stages]
    if info.baseline is not None and info.baseline not in names:
        what = "a grid point's name (see `ablate plan`)" if info.design == "grid" else "a stage's name"
        raise SpecError(file, "study.baseline", f"{info.baseline!r} is not {what}{did_you_mean(info.baseline, names)}; "
                        f"one of: {', '.join(names[:8])}{' …' if len(names) > 8 else ''}")


def study_warnings(study: Study) -> list[str]:
    """'file: key path: message' for each setting that is valid but probably not what was meant (a search that
    never leaves its random start-up trials); `ablate plan` and `ablate run` print them, neither refuses."""
    found = search_warnings(study.search.settings) if study.search is not None else []
    return [f"{study.path}: {warning}" for warning in found]


def importable(study_path: str | Path) -> tuple[str, ...]:
    """A custom model's or dataset's `package.module` may live beside the study file or in the current folder: both
    go on sys.path (first), before the study is read, since a dataset factory is called to validate it. The folders,
    for workers that import the same factories."""
    folders = (str(Path(study_path).resolve().parent), os.getcwd())
    for folder in folders:
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return folders


def load_study(path: str | Path) -> Study:
    """Read and validate a study file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), "", "no such study file") from None
    except IsADirectoryError:
        raise SpecError(str(path), "", "is a directory, not a study file") from None
    except UnicodeDecodeError:
        raise SpecError(str(path), "", "is not UTF-8 text (TOML files must be UTF-8)") from None
    return parse_study(text, str(path))

