"""Trained models as MLflow 3 logged models: what the experiment's Models tab lists, what the registry registers and
`mlflow models serve` serves.

A saved model (ablate.tracking's _models) keeps ablate's own files among its run's artifacts; its MLflow model
(torch.export's format of ablate.engine's Served: float32 pixel values in, class scores out, a clear error for an
input it would misread) is a logged model of the run's experiment, named as the run's artifact folder (`model`,
`model-last`), with the run as its source and among the run's outputs, the trial's params and tags, and, once the
trial is committed, its final metrics (the commit carries the model's id: ablate.tracking's _tracker_claims). MLflow
reads `runs:/<run>/model` as the run's `model` folder merged with that logged model's files, so the URI ablate
always printed still loads it; `models:/<model id>` names the logged model alone.

A model that stops standing for its arm (pruned under `best`, or its run's claim lost) is deleted: its files first
(the space is why it is pruned), then the logged model itself, which MLflow then leaves out of searches and the
Models tab — a logged model kept but marked would still be listed there among the arm's best ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.tracking._tags import SEED, STAGE, STUDY, TRIAL_HASH

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from ablate.tracking._tracker import Tracker

MODEL_TYPE = "ablate-classifier"  # the logged models' model_type: searchable, e.g. model_type = 'ablate-classifier'
_RUN_TAGS = (STUDY, STAGE, SEED, TRIAL_HASH)  # what a logged model repeats of its run's tags
# The final metrics measured on the trial's data: linked to its dataset too, which the Models tab shows them under.
DATA_METRICS = ("test_accuracy", "test_loss", "tested_val_accuracy")


def log_mlflow_model(tracker: Tracker, run_id: str, served: nn.Module, example: np.ndarray, name: str, step: int,
                     tags: dict[str, str]) -> str | None:
    """`served` as a logged model `name` of run `run_id` (see the module docstring), ready; its id. None, and nothing
    logged, where torch.export cannot trace the network (a custom model's Python control flow): never a pickle."""
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    run = tracker.client.get_run(run_id)
    with tempfile.TemporaryDirectory() as folder:
        path, description = Path(folder) / name, Model()
        if not _save(served, example, path, description):
            return None
        logged = tracker.client.create_logged_model(
            run.info.experiment_id, name=name, source_run_id=run_id, params=dict(run.data.params),
            tags={**{key: run.data.tags[key] for key in _RUN_TAGS if key in run.data.tags}, **tags},
            model_type=MODEL_TYPE)
        try:
            description.model_id = description.model_uuid = logged.model_id
            description.run_id, description.artifact_path = run_id, logged.artifact_location
            description.save(str(path / "MLmodel"))  # the ids MLflow's own log_model writes there
            tracker.client.log_model_artifacts(logged.model_id, str(path))
            tracker.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step)])
            tracker.client.finalize_logged_model(logged.model_id, "READY")
        except BaseException:
            delete_logged_models(tracker, [logged])  # a half-logged model: not listed as one
            raise
    return logged.model_id


def final_metrics(metrics: dict[str, float], timestamp: int, step: int, model_id: str | None = None,
                  dataset: tuple[str, str] | None = None) -> list:
    """A trial's final metrics as MLflow records: its run's, and its logged model's where `model_id` names one — those
    measured on its data also on its dataset (`dataset`: the name and digest of its run's dataset input). The data's
    come first, test accuracy first of all: the Models tab shows metric columns in the order it first meets them."""
    from mlflow.entities import Metric

    first = [key for key in DATA_METRICS if key in metrics]
    records = []
    for key in first + [key for key in metrics if key not in first]:
        on_data = model_id is not None and dataset is not None and key in DATA_METRICS
        name, digest = dataset if on_data else (None, None)
        records.append(Metric(key, float(metrics[key]), timestamp, step, model_id=model_id, dataset_name=name,
                              dataset_digest=digest))
    return records


def _save(served: nn.Module, example: np.ndarray, path: Path, description: Any) -> bool:
    """`served` as an MLflow model in `path` (torch.export's format, with its signature and input example: float32
    pixel values), described by the mlflow.models.Model `description`; False where torch.export cannot trace it."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    example = example.astype("float32")
    with torch.inference_mode():
        scores = served(torch.from_numpy(example)).numpy()
    try:
        mlflow.pytorch.save_model(served, path, serialization_format="pt2", mlflow_model=description,
                                  signature=infer_signature(example, scores), input_example=example,
                                  pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])  # not inferred:
        return True  # inferring runs a subprocess
    except Exception:  # noqa: BLE001 — a network torch.export cannot trace: its state dict and settings still rebuild it
        return False


def logged_models(tracker: Tracker, experiment_id: str, run_id: str | None = None) -> list:
    """The experiment's logged models that are not deleted (or only run `run_id`'s)."""
    found, token = [], None
    where = f"source_run_id = '{run_id}'" if run_id else None
    while True:
        page = tracker.client.search_logged_models([experiment_id], filter_string=where, max_results=100,
                                                   page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def tag_logged_models(tracker: Tracker, models: list, tags: dict[str, str]) -> None:
    for model in models:
        tracker.client.set_logged_model_tags(model.model_id, tags)


def delete_logged_models(tracker: Tracker, models: list) -> None:
    """Each logged model's files, then the model (see the module docstring). Raises where the store cannot."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    for model in models:
        repository = get_artifact_repository(model.artifact_location, tracking_uri=tracker.uri)
        if repository.list_artifacts():
            repository.delete_artifacts()
        tracker.client.delete_logged_model(model.model_id)
