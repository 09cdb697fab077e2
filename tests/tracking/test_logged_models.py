"""Trained models as MLflow logged models (ablate.tracking's _logged): linked to their run and its final metrics, kept
per arm as ablate's own models are (settle_models), deleted with them when pruned; and each trial's data as its run's
dataset input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from torch import nn

from ablate import datasets
from ablate.datasets import DataSettings
from ablate.engine import Classifier, Served
from ablate.errors import StoreError
from ablate.tracking import (
    MODEL,
    MODEL_SAVED,
    dataset_input,
    logged_models,
    save_model,
    settle_models,
)
from tests.conftest import DATA_DIR
from tests.tracking.test_exactly_once import _parent


def _trained(tracker, experiment, parent, trial, accuracy: float) -> tuple[str, str]:
    """`trial`'s run as a worker leaves it: its model saved (a small network), then committed with its test accuracy;
    its run id and its logged model's id."""
    claim = tracker.claim_trial(experiment, parent, trial, {})
    torch.manual_seed(trial.seed)
    model = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), 33.3, 78.5).eval()
    example = np.zeros((2, 1, 28, 28), dtype=np.uint8)
    model_id = save_model(tracker, claim.run_id, model, Served(model, 0, 255, whole=True).eval(), example,
                          {"arm": trial.stage, "weights": "epoch 2 of 2, tested"}, step=2)
    tracker.set_tag(claim.run_id, MODEL, MODEL_SAVED)
    assert tracker.commit_trial(claim.lease, claim.run_id, {"test_loss": 1.0, "test_accuracy": accuracy}, step=2,
                                model_id=model_id, dataset=("mnist", "0123456789ab"))
    return claim.run_id, model_id


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["best", "all"])
def test_each_arms_best_model_stays_listed_and_a_pruned_ones_logged_model_goes_with_its_files(tracked, policy):
    tracker, experiment, study, trials = tracked
    parent = _parent(tracker, experiment, study)
    accuracy = {("linear", 0): 0.70, ("linear", 1): 0.80, ("mlp", 0): 0.60, ("mlp", 1): 0.60}  # mlp: a tie
    made = {(t.stage, t.seed): _trained(tracker, experiment, parent, t, accuracy[t.stage, t.seed]) for t in trials}
    models = {m.model_id: m for m in logged_models(tracker, experiment)}
    for (arm, seed), (run_id, model_id) in made.items():
        model = models[model_id]
        assert (model.name, model.source_run_id, model.status) == ("model", run_id, LoggedModelStatus.READY)
        assert (model.tags["stage"], model.tags["seed"], model.tags[MODEL]) == (arm, str(seed), MODEL_SAVED)
        linked = {m.key: (m.value, m.dataset_name) for m in model.metrics}
        assert linked == {"test_accuracy": (accuracy[arm, seed], "mnist"), "test_loss": (1.0, "mnist")}
        assert model.params == tracker.client.get_run(run_id).data.params  # the trial's settings, as its run's
    best = settle_models(tracker, experiment, trials, policy)
    assert best == {"linear": made["linear", 1][0], "mlp": made["mlp", 0][0]}  # a tie: the lowest seed
    left = {m.model_id: m.tags[MODEL] for m in logged_models(tracker, experiment)}
    losers = [made["linear", 0][1], made["mlp", 1][1]]
    if policy == "best":
        assert left == {made["linear", 1][1]: "best", made["mlp", 0][1]: "best"}
        for model_id in losers:  # deleted, and its files with it
            with pytest.raises((MlflowException, StoreError), match="not found"):
                tracker.client.get_logged_model(model_id)
            assert not Path(models[model_id].artifact_location.removeprefix("file://")).exists()
    else:
        assert left == {made["linear", 1][1]: "best", made["mlp", 0][1]: "best", **dict.fromkeys(losers, "saved")}
    settle_models(tracker, experiment, trials, policy)  # again: nothing changes
    assert {m.model_id: m.tags[MODEL] for m in logged_models(tracker, experiment)} == left


@pytest.mark.slow
def test_a_trial_committed_by_a_worker_that_died_before_recording_it_gets_its_metrics_on_its_model(tracked):
    """The commit carries the logged model's id (and the dataset's name and digest): whoever completes the run from
    it (settle, after the worker died between the commit and its record) links the metrics to the model too."""
    tracker, experiment, study, trials = tracked
    claim = tracker.claim_trial(experiment, _parent(tracker, experiment, study), trials[0], {})
    model = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), 33.3, 78.5).eval()
    model_id = save_model(tracker, claim.run_id, model, Served(model, 0, 255, whole=True).eval(),
                          np.zeros((2, 1, 28, 28), dtype=np.uint8), {"weights": "epoch 2 of 2, tested"}, step=2)
    result = {"metrics": {"test_accuracy": 0.8, "params_count": 7850.0}, "step": 2, "timestamp": 1_700_000_000_000,
              "model_id": model_id, "dataset": ["mnist", "0123456789ab"]}
    assert tracker.claims.commit(claim.lease, claim.run_id, result)  # then it died
    assert tracker.settle(claim.run_id, "FAILED", error="gone", force=True).state.status == "FINISHED"
    linked = {m.key: (m.value, m.dataset_name, m.step) for m in tracker.client.get_logged_model(model_id).metrics}
    assert linked == {"test_accuracy": (0.8, "mnist", 2), "params_count": (7850.0, None, 2)}


def test_a_trials_dataset_input_names_its_data_and_split():
    """The dataset's name, a digest of its fingerprint and split (arms split differently are different datasets to
    MLflow, which keeps one profile per digest), the split's sizes, the images' and labels' tensor spec."""
    settings = DataSettings(val_size=500, train_limit=1000, test_limit=500)
    data = datasets.load("mnist", settings, DATA_DIR, torch.device("cpu"))
    record = dataset_input("mnist", settings, data, DATA_DIR)
    dataset = record.dataset
    assert dataset.name == "mnist" and len(dataset.digest) == 12 and len(data.fingerprint) == 12
    profile = json.loads(dataset.profile)
    assert (profile["train"], profile["val"], profile["test"], profile["classes"]) == (1000, 500, 500, 10)
    assert profile["data_fingerprint"] == data.fingerprint
    features = json.loads(json.loads(dataset.schema)["mlflow_tensorspec"]["features"])
    assert features[0]["tensor-spec"] == {"dtype": "uint8", "shape": [-1, 1, 28, 28]}
    assert json.loads(dataset.source)["uri"].endswith("MNIST/raw")
    assert [(tag.key, tag.value) for tag in record.tags] == [("mlflow.data.context", "training")]
    other = DataSettings(val_size=500, train_limit=2000, test_limit=500)
    more = dataset_input("mnist", other, datasets.load("mnist", other, DATA_DIR, torch.device("cpu")), DATA_DIR)
    assert more.dataset.digest != dataset.digest and json.loads(more.dataset.profile)["train"] == 2000
    assert json.loads(more.dataset.profile)["data_fingerprint"] == data.fingerprint  # the same data, split otherwise
