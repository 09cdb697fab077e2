"""A study's trials: every arm with every seed, resolved, sized and described."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ablate import datasets, models
from ablate.design._identity import flatten, format_value, identity, settings_hash
from ablate.errors import SpecError
from ablate.spec import ScheduleSpec, Stage, Study, TrialSettings


@dataclass(frozen=True)
class Trial:
    study: str
    stage: str
    stage_index: int
    seed: int
    settings: TrialSettings
    hash: str
    changes: str  # what its stage changes relative to the previous stage
    architecture: str
    params_count: int

    def params(self) -> dict[str, str]:
        """Every resolved setting, flattened to dotted keys, as MLflow params."""
        return {key: format_value(value) for key, value in flatten(self.settings.to_dict()).items()}


def describe_changes(previous: Stage | None, stage: Stage, architecture: str = "") -> str:
    """The settings an arm changes relative to the one it is compared with, e.g. 'train.loss=cross_entropy'.

    A change of model kind or of its layout (conv blocks, a custom factory) reads as the new architecture, not
    as a dump of every block.
    """
    if previous is None:
        return "baseline"
    before = flatten(previous.settings("", 0).to_dict())
    after = flatten(stage.settings("", 0).to_dict())
    structural = any(before.get(key) != after.get(key) for key in ("model.kind", *models.LAYOUT_SETTINGS))
    changed = [f"model={architecture}"] if structural and architecture else []
    new_schedule = before.get("train.schedule.kind") != after.get("train.schedule.kind")
    if new_schedule:
        changed.append(f"train.schedule={_kinded(stage.train.schedule)}")
    for key, value in after.items():
        if ((structural and architecture and key.startswith("model."))
                or (new_schedule and key.startswith("train.schedule."))):
            continue
        if key in before and before[key] == value:
            continue
        if key not in before and (value is None or not value or value in ("none", "default")):
            continue  # a new model kind's switch left off (dropout 0, batchnorm false) changes nothing
        changed.append(f"{key}={format_value(value)}")
    return ", ".join(changed) or "nothing (same settings)"


def _kinded(table: ScheduleSpec) -> str:
    """A kinded table as one word plus what differs from its defaults: 'onecycle', 'step(step_size=15)'."""
    values = identity(table)
    kind = values.pop("kind")
    inner = ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
    return f"{kind}({inner})" if inner else kind


@dataclass(frozen=True)
class Design:
    """A study's trials, and the grid points merged away because they resolve to another point's settings."""

    trials: list[Trial]
    merged: list[tuple[str, str]]  # (merged arm, the arm it is the same trial as)

    @property
    def arms(self) -> int:
        return len({t.stage for t in self.trials})


def _size(stage: Stage, study: Study) -> tuple[int, str]:
    """Parameter count and one-line description, from the spec alone (a custom model is built on torch's meta
    device); an architecture that does not fit the data is an error at the model's table."""
    data = datasets.get(study.info.dataset)
    where = f"{stage.source}.model" if stage.source else "model"
    try:
        return models.params_count(stage.model, data), models.describe(stage.model, data)
    except models.ModelError as exc:
        raise SpecError(study.path, f"{where}.{exc.key}" if exc.key else where, str(exc)) from None


def expand_design(study: Study) -> Design:
    """Every arm with every seed (the same seeds in every arm, so comparisons pair).

    Grid points that resolve to the same settings as an earlier point are one trial (no-op merging);
    in a ladder or an ablation, an arm that changes nothing is a mistake in the file.
    """
    trials: list[Trial] = []
    merged: list[tuple[str, str]] = []
    owner: dict[str, Stage] = {}
    for stage in study.stages:
        same = settings_hash(stage.settings(study.info.dataset, 0))
        if same in owner:
            twin = owner[same]
            if study.info.design == "grid":
                written = " ".join(f"{axis}={format_value(value)}" for axis, value in stage.point)
                merged.append((written, twin.name))
                continue
            table = "stage" if study.info.design == "ladder" else "arm"
            where = f"{table}[{stage.index + (1 if table == 'stage' else 0)}]"
            raise SpecError(study.path, where, f"resolves to the same settings as '{twin.name}'; every {table} must "
                                               "change something")
        owner[same] = stage
        params, architecture = _size(stage, study)
        previous = None if stage.compare_to is None else study.stages[stage.compare_to]
        changes = describe_changes(previous, stage, architecture)
        for seed in study.info.seeds:
            settings = stage.settings(study.info.dataset, seed)
            trials.append(
                Trial(study=study.name, stage=stage.name, stage_index=stage.index, seed=seed, settings=settings,
                      hash=settings_hash(settings), changes=changes, architecture=architecture, params_count=params)
            )
    if study.info.design == "grid":
        _check_axes_matter(study)
    return Design(trials, merged)


def _check_axes_matter(study: Study) -> None:
    """An axis whose values all resolve to the same settings, wherever the other axes stand, is a mistake."""
    for axis in study.axes:
        groups: dict[str, set[str]] = {}
        counts: dict[str, int] = {}
        for stage in study.stages:
            others = json.dumps([(p, v) for p, v in stage.point if p != axis], sort_keys=True, default=str)
            key = f"{stage.source}|{others}"
            groups.setdefault(key, set()).add(settings_hash(stage.settings(study.info.dataset, 0)))
            counts[key] = counts.get(key, 0) + 1
        varied = any(n > 1 for n in counts.values())  # a one-value axis fixes a setting: nothing to vary
        if varied and all(len(hashes) == 1 for hashes in groups.values()):
            raise SpecError(study.path, f'grid."{axis}"', "has no effect in any grid point: every value resolves "
                            "to the same settings")


def trial_for(study: Study, stage: Stage, seed: int, changes: str = "") -> Trial:
    """One trial of a stage built outside a fixed design (a searched point, a confirm run)."""
    params, architecture = _size(stage, study)
    settings = stage.settings(study.info.dataset, seed)
    return Trial(study=study.name, stage=stage.name, stage_index=stage.index, seed=seed, settings=settings,
                 hash=settings_hash(settings), changes=changes, architecture=architecture, params_count=params)


def expand(study: Study) -> list[Trial]:
    return expand_design(study).trials


def varying_settings(trials: list[Trial]) -> list[str]:
    """Dotted setting keys whose value is not the same in every trial (seed aside)."""
    flats = [flatten(t.settings.to_dict()) for t in trials]
    keys = sorted({k for flat in flats for k in flat} - {"seed"})
    return [k for k in keys if len({format_value(flat.get(k)) for flat in flats}) > 1]

