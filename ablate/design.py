"""Expand a study into trials: fully resolved settings and a stable hash identity.

A trial is identified by a hash of everything that determines its result (dataset, data
split, model, training settings, seed) — never by its stage name or its position in the
file — so renaming or reordering stages keeps finished work, and resume is exact.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, fields, is_dataclass, replace
from typing import Any

from ablate import sizes
from ablate.errors import SpecError
from ablate.spec import DATASETS, CNNModel, ConstantSchedule, CustomModel, MLPModel, Stage, Study, TrialSettings

HASH_LENGTH = 12


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


def describe_changes(previous: Stage | None, stage: Stage, architecture: str = "") -> str:
    """The settings an arm changes relative to the one it is compared with, e.g. 'train.loss=cross_entropy'.

    A change of model kind or of conv blocks reads as the new architecture, not as a dump of every block.
    """
    if previous is None:
        return "baseline"
    before = flatten(previous.settings("", 0).to_dict())
    after = flatten(stage.settings("", 0).to_dict())
    structural = any(
        before.get(key) != after.get(key) for key in ("model.kind", "model.blocks", "model.factory", "model.kwargs")
    )
    changed = [f"model={architecture}"] if structural and architecture else []
    new_schedule = before.get("train.schedule.kind") != after.get("train.schedule.kind")
    if new_schedule:
        changed.append(f"train.schedule={_kinded(stage.train.schedule)}")
    for key, value in after.items():
        if (structural and architecture and key.startswith("model.")) or (new_schedule and key.startswith("train.schedule.")):
            continue
        if key in before and before[key] == value:
            continue
        if key not in before and (value is None or not value or value in ("none", "default")):
            continue  # a new model kind's switch left off (dropout 0, batchnorm false) changes nothing
        changed.append(f"{key}={format_value(value)}")
    return ", ".join(changed) or "nothing (same settings)"


def _kinded(table: Any) -> str:
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
    """Parameter count and one-line description, from the spec alone (a custom model is built on torch's meta device)."""
    dataset = DATASETS[study.info.dataset]
    where = f"{stage.source}.model" if stage.source else "model"
    if isinstance(stage.model, CustomModel):
        from ablate.models import custom_size  # imports torch and the user's module: only custom models pay for it

        try:
            return custom_size(stage.model, dataset), sizes.describe(stage.model, dataset)
        except Exception as exc:  # the user's import path or factory is wrong: a spec error, not a crash
            raise SpecError(study.path, f"{where}.factory", f"{type(exc).__name__}: {exc}") from None
    try:
        return sizes.params_count(stage.model, dataset), sizes.describe(stage.model, dataset)
    except sizes.ShapeError as exc:
        raise SpecError(study.path, where, str(exc)) from None


def expand_design(study: Study) -> Design:
    """Every arm with every seed (the same seeds in every arm, so comparisons pair).

    Grid points that resolve to the same settings as an earlier point are one trial (no-op merging);
    in a ladder or an ablation, an arm that changes nothing is a mistake in the file.
    """
    trials: list[Trial] = []
    merged: list[tuple[str, str]] = []
    owner: dict[str, Stage] = {}
    for stage in study.stages:
        identity = settings_hash(stage.settings(study.info.dataset, 0))
        if identity in owner:
            twin = owner[identity]
            if study.info.design == "grid":
                written = " ".join(f"{axis}={format_value(value)}" for axis, value in stage.point)
                merged.append((written, twin.name))
                continue
            table = "stage" if study.info.design == "ladder" else "arm"
            where = f"{table}[{stage.index + (1 if table == 'stage' else 0)}]"
            raise SpecError(study.path, where, f"resolves to the same settings as '{twin.name}'; every {table} must change something")
        owner[identity] = stage
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
        sizes_: dict[str, int] = {}
        for stage in study.stages:
            others = json.dumps([(p, v) for p, v in stage.point if p != axis], sort_keys=True, default=str)
            key = f"{stage.source}|{others}"
            groups.setdefault(key, set()).add(settings_hash(stage.settings(study.info.dataset, 0)))
            sizes_[key] = sizes_.get(key, 0) + 1
        varied = any(n > 1 for n in sizes_.values())  # a one-value axis fixes a setting: nothing to vary
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


# What may differ between trials packed into one network ([execution] pack): the numbers a stacked network
# can carry per trial. Everything else — architecture, data, epochs, batch size, optimizer kind, loss,
# augmentation — must be equal, which pack_key checks by blanking these and comparing what is left.
PACKABLE_TRAIN = {"lr": 1.0, "weight_decay": 0.0, "momentum": 0.0, "init": "default", "schedule": ConstantSchedule(),
                  "label_smoothing": 0.0, "grad_clip": None, "early_stopping": None}


def pack_key(settings: TrialSettings) -> str | None:
    """Trials with equal keys can train packed together; None: this trial trains alone (a custom model)."""
    model = settings.model
    if isinstance(model, CustomModel):
        return None  # its layers are the user's: ablate cannot stack them
    if isinstance(model, MLPModel):
        model = replace(model, dropout=0.0)
    elif isinstance(model, CNNModel):
        resolved = model.resolved()
        model = replace(resolved, blocks=tuple(replace(b, dropout=0.0) for b in resolved.blocks))
    blanked = replace(settings, seed=0, model=model, train=replace(settings.train, **PACKABLE_TRAIN))
    return json.dumps(identity(blanked), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Pack:
    """Trials trained together as one batched network; each is still its own run."""

    trials: tuple[Trial, ...]

    @property
    def key(self) -> str:
        return "pack:" + "+".join(t.hash for t in self.trials)


def task_key(task) -> str:
    """What a worker's events name its task by: a trial's hash, a pack's or a search task's key."""
    return task.hash if isinstance(task, Trial) else task.key


def task_trials(task) -> tuple[Trial, ...]:
    """The trials a task trains, as far as known before it runs (a search task draws its trial as it starts)."""
    return (task,) if isinstance(task, Trial) else getattr(task, "trials", ())


def pack_trials(trials: list[Trial], size: int) -> list[Trial | Pack]:
    """Group trials that can share a network into packs of up to `size`, keeping the trials' order; a trial
    with no partner stays a plain trial."""
    if size <= 1:
        return list(trials)
    groups: dict[str | None, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(pack_key(trial.settings) or trial.hash, []).append(trial)
    tasks: list[Trial | Pack] = []
    for group in groups.values():
        for start in range(0, len(group), size):
            chunk = group[start : start + size]
            tasks.append(chunk[0] if len(chunk) == 1 else Pack(tuple(chunk)))
    return tasks
