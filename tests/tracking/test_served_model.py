"""A trained model served by `mlflow models serve`, as a user serves it: raw pixel values 0-255 in, the right classes
out; images scaled to [0, 1], or values outside 0-255, refused with a message that says what to send (not answered
with garbage, as a uint8 signature, to which MLflow casts JSON numbers, made them)."""

from __future__ import annotations

import signal

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from ablate import datasets
from ablate.cli import main
from tests._serving import ModelServer
from tests.conftest import DATA_DIR, TINY_STUDY

LIMIT_S = 400  # the study (seconds), the server's start (tens of seconds), four requests
WHAT_TO_SEND = "this model takes pixel values 0-255"


class _Timeout(Exception):
    pass


def _raise(signum, frame):
    raise _Timeout(f"the served-model test took over {LIMIT_S} s")


def _right_on(predictions: np.ndarray, labels: np.ndarray, digit: int) -> int:
    """The first test image of `digit` that the run's own test pass classified right."""
    return int(np.flatnonzero((labels == digit) & (predictions == digit))[0])


@pytest.mark.slow
def test_a_served_model_classifies_pixel_values_and_refuses_scaled_images(write_study, store, tmp_path):
    study = write_study(TINY_STUDY, "tiny.toml")
    assert main(["run", str(study), "--tracking-uri", store]) == 0
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    model = max(client.search_logged_models([experiment]),
                key=lambda m: next(x.value for x in m.metrics if x.key == "test_accuracy"))
    mlflow.set_tracking_uri(store)
    predictions = np.load(mlflow.artifacts.download_artifacts(run_id=model.source_run_id,
                                                              artifact_path="test_outputs.npz"))["predictions"]
    test = datasets.read_arrays("mnist", DATA_DIR)
    labels = test["test_labels"][: len(predictions)]
    picked = [_right_on(predictions, labels, 7), _right_on(predictions, labels, 2)]
    images = test["test_images"][picked]  # uint8, (2, 1, 28, 28), as MNIST's files hold them
    previous = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(LIMIT_S)
    try:
        with ModelServer(store, f"models:/{model.model_id}", tmp_path) as server:
            answers = {
                "uint8": server.invoke({"inputs": images.tolist()}),
                "scaled": server.invoke({"inputs": (images / 255.0).tolist()}),
                "binary": server.invoke({"inputs": (images > 127).astype(float).tolist()}),
                "too big": server.invoke({"inputs": (images.astype(int) * 2).tolist()}),
            }
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    status, body = answers["uint8"]
    assert status == 200, body
    assert np.argmax(np.array(body["predictions"]), axis=1).tolist() == [7, 2]
    for name in ("scaled", "binary", "too big"):
        status, body = answers[name]
        assert 400 <= status < 600 and WHAT_TO_SEND in str(body), (name, status, str(body)[-600:])
    assert "multiplied by 255" in str(answers["scaled"][1]) and "fractional" in str(answers["scaled"][1])
    assert "outside [0, 255]" in str(answers["too big"][1])
