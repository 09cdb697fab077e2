"""Trained models in MLflow: saved by the worker that trained them, settled per arm, found again.

Contract, under `[tracking] models`:
- `all`: every FINISHED trial run holds its model; `none`: none does.
- `best`: a worker saves its trial's model unless a FINISHED run of the same arm already tested better
  (`beaten`). The model is written before the run is FINISHED, so whichever run of an arm is the best
  FINISHED one always holds a model — two runs finishing at once may both keep theirs, never neither.
  Once every seed of an arm is FINISHED, the invocation that sees it (`settle_models`) tags the best
  run `model = best` (ties: the lowest seed) and deletes the other runs' models (`model = pruned`),
  leaving one per arm. A store that cannot delete artifacts keeps them: nothing is lost, only space.

A saved model is a folder of the run's artifacts holding what ablate loads it from, none of which
runs code when read: `ablate.json` (the trial's resolved settings, its dataset's shape and class
names, what it scored — enough to rebuild the network with ablate, or to know what it is without),
`state_dict.pt` (the network's weights: tensors only, read with torch.load(weights_only=True)) and
`probe.pt` (a few fixed images and the scores the model gave them, which a rebuilt network must
give again). Where torch.export traces the network it is also an MLflow 3 logged model of the
same name, linked to its run, with its signature and an input example — float32 pixel values in,
class scores out, an error for an input it would misread (ablate.engine's Served) — and the run's
final metrics: what the experiment's Models tab lists and the registry registers
(ablate.tracking's _logged). Ablate never loads it, since loading a torch.export program
unpickles parts of it. A network that does not export (a custom model's Python control flow)
gets no MLflow model: never a pickle, which would run whatever code it names when loaded. A model
pruned under `best` loses its logged model too.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.tracking._logged import delete_logged_models, log_mlflow_model, logged_models, tag_logged_models
from ablate.tracking._tags import (
    LAST_MODEL_ARTIFACT,
    MODEL,
    MODEL_ARTIFACT,
    MODEL_BEST,
    MODEL_PRUNED,
    MODEL_SAVED,
    MODEL_SETTINGS,
    ROLE,
    SEED,
    STAGE,
    TRIAL_HASH,
)

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from ablate.design import Trial
    from ablate.tracking._tracker import Tracker

MODEL_STATE, MODEL_PROBE = "state_dict.pt", "probe.pt"  # beside ablate.json in a saved model's folder
ARM_METRIC = "test_accuracy"  # what "an arm's best run" is best at: the report's primary metric
_FINISHED_TRIALS = f"tags.{ROLE} = 'trial' and attributes.status = 'FINISHED'"


def beaten(tracker: Tracker, experiment_id: str, stage: str, value: float) -> bool:
    """Does a FINISHED run of this arm already score better than `value`? Then a run scoring `value` is not its
    arm's best, and under `best` keeps no model."""
    if math.isnan(value):
        return True
    better = tracker.search(experiment_id, f"{_FINISHED_TRIALS} and metrics.{ARM_METRIC} > {value!r}")
    return any(run.data.tags.get(STAGE) == stage for run in better)


def save_model(tracker: Tracker, run_id: str, model: nn.Module, served: nn.Module, example: np.ndarray,
               about: dict[str, Any], artifact: str = MODEL_ARTIFACT, step: int = 0) -> str | None:
    """`model` (ablate.engine's Classifier, on the CPU, in eval mode) as the run's saved model in `artifact`: its
    network's state dict, its scores on the probe images, `about` as ablate.json and, where it exports, `served`
    (ablate.engine's Served around it) as a logged model of the run, logged at `step` (see the module docstring).
    Returns the logged model's id, None where there is none."""
    import torch

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / artifact
        path.mkdir()
        torch.save(model.net.state_dict(), path / MODEL_STATE)
        probe = probe_images(example.shape[1:], floats=example.dtype.kind == "f")
        with torch.inference_mode():
            torch.save({"images": probe, "scores": model(probe)}, path / MODEL_PROBE)
        (path / MODEL_SETTINGS).write_text(json.dumps(about, indent=1, default=list))
        tracker.log_artifacts(run_id, str(path), artifact)
    tags = {MODEL: MODEL_SAVED, "weights": str(about.get("weights"))}  # `model`: its run's, which settle_models moves
    return log_mlflow_model(tracker, run_id, served, example, artifact, step, tags)


def probe_images(shape: tuple[int, ...], floats: bool):
    """Three random images of `shape` as a saved model takes them (uint8 0-255, or floats 0-1 for a float dataset),
    the same everywhere: what a saved model's scores are recorded on, and a rebuilt network is checked against."""
    import torch

    probe = torch.randint(0, 256, (3, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return probe.float() / 255 if floats else probe


def settle_models(tracker: Tracker, experiment_id: str, trials: list[Trial], policy: str) -> dict[str, str]:
    """Each complete arm's best run tagged `model = best` (and, under `best`, the other runs' models deleted); the
    best run id of every arm that has one. Idempotent: a second call changes nothing."""
    if policy == "none":
        return {}
    by_hash = {run.data.tags.get(TRIAL_HASH): run for run in tracker.search(experiment_id, _FINISHED_TRIALS)}
    arms: dict[str, list[Trial]] = defaultdict(list)
    for trial in trials:
        arms[trial.stage].append(trial)
    best_runs: dict[str, str] = {}
    held = _LoggedModels(tracker, experiment_id)
    for stage, arm in arms.items():
        runs = [by_hash.get(trial.hash) for trial in arm]
        if None in runs:
            continue  # seeds still to train: a better run may come
        best = max(runs, key=lambda run: (run.data.metrics.get(ARM_METRIC, -math.inf), -int(run.data.tags[SEED])))
        if best.data.tags.get(MODEL) not in (MODEL_SAVED, MODEL_BEST):
            continue  # trained without models (`none` then, or an earlier version of ablate)
        if best.data.tags.get(MODEL) != MODEL_BEST:
            tracker.set_tag(best.info.run_id, MODEL, MODEL_BEST)
            tag_logged_models(tracker, held.of(best.info.run_id), {MODEL: MODEL_BEST})
        best_runs[stage] = best.info.run_id
        for run in runs:
            state = run.data.tags.get(MODEL)
            if run is not best and (state == MODEL_BEST or (state == MODEL_SAVED and policy == "best")):
                _demote(tracker, run, held.of(run.info.run_id), prune=policy == "best")
    return best_runs


class _LoggedModels:
    """The experiment's logged models by run, searched once, on first use (an arm with no run to demote needs none)."""

    def __init__(self, tracker: Tracker, experiment_id: str):
        self.tracker, self.experiment_id, self._by_run = tracker, experiment_id, None

    def of(self, run_id: str) -> list:
        if self._by_run is None:
            self._by_run = defaultdict(list)
            for model in logged_models(self.tracker, self.experiment_id):
                self._by_run[model.source_run_id].append(model)
        return self._by_run.get(run_id, [])


def _demote(tracker: Tracker, run, models: list, prune: bool) -> None:
    """A run that is not its arm's best: its models deleted (`best`) — its logged models first, so that a store that
    cannot delete leaves what ablate loads (its artifacts) whole —, or kept as any run's (`all`)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if prune:
        try:
            delete_logged_models(tracker, models)
            repository = get_artifact_repository(run.info.artifact_uri, tracking_uri=tracker.uri)
            for folder in (MODEL_ARTIFACT, LAST_MODEL_ARTIFACT):
                repository.delete_artifacts(folder)
        except Exception:  # noqa: BLE001 — a store that cannot delete keeps the model: space, not data, is lost
            tracker.set_tag(run.info.run_id, MODEL, MODEL_SAVED)
            return
    else:
        tag_logged_models(tracker, models, {MODEL: MODEL_SAVED})
    tracker.set_tag(run.info.run_id, MODEL, MODEL_PRUNED if prune else MODEL_SAVED)


def model_runs(tracker: Tracker, experiment_id: str) -> dict[str, Any]:
    """Per arm, the run whose model stands for it (stand_ins), read from the store."""
    return stand_ins(tracker.search(experiment_id, f"{_FINISHED_TRIALS} and tags.{MODEL} != '{MODEL_PRUNED}'"))


def stand_ins(runs: list) -> dict[str, Any]:
    """Per arm, among MLflow `runs` (any status or role: a reader's own list), the run whose model stands for it: the
    one tagged best, else (an arm still training) its best FINISHED trial run that holds a model."""
    found: dict[str, Any] = {}
    for run in runs:
        tags, stage = run.data.tags, run.data.tags.get(STAGE)
        if (run.info.status != "FINISHED" or tags.get(ROLE) != "trial" or stage is None
                or tags.get(MODEL) not in (MODEL_SAVED, MODEL_BEST)):
            continue
        held = found.get(stage)
        if held is None or _rank(run) > _rank(held):
            found[stage] = run
    return found


def _rank(run) -> tuple:
    return (run.data.tags.get(MODEL) == MODEL_BEST, run.data.metrics.get(ARM_METRIC, -math.inf),
            -int(run.data.tags.get(SEED, "0")))
