"""The plan document: a study's full trial list and its arms, logged on every parent run for the report."""

from __future__ import annotations

from typing import Any

from ablate import datasets, models
from ablate.design._trials import Trial
from ablate.spec import Stage, Study, resolve_point


def plan_document(study: Study, trials: list[Trial], arms: tuple[Stage, ...] | None = None) -> dict[str, Any]:
    """The study's full trial list, logged on each parent run so reports know the current design."""
    stages = {}
    for t in trials:
        stage = (arms or study.stages)[t.stage_index]
        stages.setdefault(
            t.stage,
            {
                "name": t.stage,
                "index": t.stage_index,
                "description": stage.description,
                "reference": stage.reference,
                "changes": t.changes,
                "architecture": t.architecture,
                "params_count": t.params_count,
                "macs": models.macs(t.settings.model, datasets.get(t.settings.dataset)),
            },
        )
    return {
        "study": study.name,
        "design": study.info.design,
        "baseline": study.info.baseline if study.info.design != "ablation" else None,  # ablation: its first arm
        "description": study.info.description,
        "stages": list(stages.values()),
        "trials": [{"hash": t.hash, "stage": t.stage, "seed": t.seed} for t in trials],
        # how the report turns comparisons into verdicts; adaptive seeds: the trials above are the most each arm may get
        "stats": {"margin": study.stats.margin, "alpha": study.stats.alpha, "metric": study.stats.metric},
        "adaptive": None if study.adaptive is None else {"min": study.adaptive.min, "max": study.adaptive.max,
                                                         "first": study.adaptive.first},
    }


def resident_needs(study: Study, trials: list[Trial]) -> dict[str, int]:
    """Bytes one worker holds resident per dataset (a worker keeps every split its trials use: one per distinct
    dataset and data settings), by the dataset's title."""
    pairs = {(t.settings.dataset, t.settings.data) for t in trials}
    if not pairs:  # a search: its trials are not known yet; its base settings' data
        pairs = {(study.info.dataset, resolve_point(study, ()).data)}
    needs: dict[str, int] = {}
    for name, data in pairs:
        dataset = datasets.get(name)
        needs[dataset.title] = needs.get(dataset.title, 0) + dataset.resident_bytes(data)
    return needs
