"""Expand a study into trials: fully resolved settings and a stable hash identity.

A trial is identified by a hash of everything that determines its result (dataset, data
split, model, training settings, seed) — never by its stage name or its position in the
file — so renaming or reordering stages keeps finished work, and resume is exact.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ablate import sizes
from ablate.errors import SpecError
from ablate.spec import DATASETS, Stage, Study, TrialSettings

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
    """A stable identity: sha256 of the canonical JSON of the resolved settings."""
    canonical = json.dumps(settings.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


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


def describe_changes(previous: Stage | None, stage: Stage) -> str:
    """The settings a ladder step changes, e.g. 'train.loss=cross_entropy'."""
    if previous is None:
        return "baseline"
    before = flatten(previous.settings("", 0).to_dict())
    after = flatten(stage.settings("", 0).to_dict())
    changed = []
    for key, value in after.items():
        if key in before and before[key] == value:
            continue
        if key not in before and (not value or value in ("none", "default")):
            continue  # a new model kind's switch left off (dropout 0, batchnorm false) changes nothing
        changed.append(f"{key}={format_value(value)}")
    return ", ".join(changed) or "nothing (same settings)"


def expand(study: Study) -> list[Trial]:
    """Ladder: every stage in order, each with every seed (the same seeds, so comparisons pair)."""
    dataset = DATASETS[study.info.dataset]
    trials: list[Trial] = []
    owner: dict[str, str] = {}
    previous: Stage | None = None
    for stage in study.stages:
        changes = describe_changes(previous, stage)
        try:
            params = sizes.params_count(stage.model, dataset)
        except sizes.ShapeError as exc:
            raise SpecError(study.path, f"stage[{stage.index + 1}].model", str(exc)) from None
        architecture = sizes.describe(stage.model, dataset)
        for seed in study.info.seeds:
            settings = stage.settings(study.info.dataset, seed)
            trial_hash = settings_hash(settings)
            if trial_hash in owner and owner[trial_hash] != stage.name:
                raise SpecError(
                    study.path,
                    f"stage[{stage.index + 1}]",
                    f"resolves to the same settings as stage '{owner[trial_hash]}'; a ladder step must change something",
                )
            owner[trial_hash] = stage.name
            trials.append(
                Trial(
                    study=study.name,
                    stage=stage.name,
                    stage_index=stage.index,
                    seed=seed,
                    settings=settings,
                    hash=trial_hash,
                    changes=changes,
                    architecture=architecture,
                    params_count=params,
                )
            )
        previous = stage
    return trials


def varying_settings(trials: list[Trial]) -> list[str]:
    """Dotted setting keys whose value is not the same in every trial (seed aside)."""
    flats = [flatten(t.settings.to_dict()) for t in trials]
    keys = sorted({k for flat in flats for k in flat} - {"seed"})
    return [k for k in keys if len({format_value(flat.get(k)) for flat in flats}) > 1]
