"""The plan document: a study's full trial list and its arms, logged on every parent run for the report."""

from __future__ import annotations

from typing import Any

from ablate import datasets, models
from ablate.design._trials import Trial
from ablate.spec import Stage, Study


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
    }
