"""Models, data and the training loop, on small MNIST subsets."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from ablate import datasets, models
from ablate.engine import train_trial
from ablate.errors import AblateError
from ablate.models import build_model, count_params
from ablate.spec import DataSettings, LinearModel, MLPModel, TrainSettings, TrialSettings
from tests.conftest import DATA_DIR

MNIST = datasets.get("mnist")
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "spec",
    [
        LinearModel(),
        MLPModel(hidden=(256,)),
        MLPModel(hidden=(256,), batchnorm=True),
        MLPModel(hidden=(256, 128), dropout=0.2),
        MLPModel(hidden=(64, 32, 16), activation="tanh", batchnorm=True),
        MLPModel(hidden=(8,), activation="none"),
    ],
)
def test_model_shapes_and_sizes_match_the_spec_arithmetic(spec):
    model = build_model(spec, MNIST)
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert count_params(model) == models.params_count(spec, MNIST)


def test_reference_sizes():
    assert models.params_count(LinearModel(), MNIST) == 7_850
    assert models.params_count(MLPModel(hidden=(256, 128)), MNIST) == 235_146  # system P's FC network


def test_mlp_layer_order_follows_system_l():
    layers = [type(m).__name__ for m in build_model(MLPModel(hidden=(16,), batchnorm=True, dropout=0.5), MNIST)]
    assert layers == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]


def test_split_is_seeded_disjoint_and_on_device():
    settings = DataSettings(val_size=1000, train_limit=2000, test_limit=300)
    first = datasets.load("mnist", settings, DATA_DIR, CPU)
    assert (len(first.train), len(first.val), len(first.test)) == (2000, 1000, 300)
    assert first.train.images.dtype == torch.uint8 and first.train.images.shape[1:] == (1, 28, 28)
    other_seed = datasets.load("mnist", DataSettings(val_size=1000, split_seed=1), DATA_DIR, CPU)
    assert not torch.equal(first.val.labels, other_seed.val.labels)
    full = datasets.load("mnist", DataSettings(), DATA_DIR, CPU)
    assert len(full.train) + len(full.val) == 60_000 and len(full.test) == 10_000
    # Normalised images have about zero mean and unit deviation over the training set.
    normalised = full.normalise(full.train.images[:20_000])
    assert abs(normalised.mean().item()) < 0.05 and abs(normalised.std().item() - 1) < 0.05


def test_missing_mnist_names_the_files(tmp_path, monkeypatch):
    # What torchvision's download meets without a network (this test must not use one).
    monkeypatch.setattr("torchvision.datasets.MNIST", _no_network)
    with pytest.raises(AblateError) as info:
        datasets.read_arrays("mnist", tmp_path)
    message = str(info.value)
    for stem in MNIST.files:
        assert f"{stem}.gz" in message
    assert str(tmp_path / "MNIST" / "raw") in message and "--data-dir" in message


def _no_network(*args, **kwargs):
    raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: network unreachable")


def test_uncompressed_idx_files_are_read_too(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in MNIST.files:
        with gzip.open(DATA_DIR / "MNIST" / "raw" / f"{stem}.gz") as src, open(raw / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    arrays = datasets.read_arrays("mnist", tmp_path)
    assert arrays["train_images"].shape == (60_000, 1, 28, 28) and arrays["test_labels"].shape == (10_000,)


def _settings(model, seed=0, **train) -> TrialSettings:
    return TrialSettings(
        dataset="mnist",
        seed=seed,
        data=DataSettings(val_size=500, train_limit=2000, test_limit=1000),
        model=model,
        train=TrainSettings(**{"epochs": 2, "batch_size": 64, **train}),
    )


def _data(settings: TrialSettings):
    return datasets.load("mnist", settings.data, DATA_DIR, CPU)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_training_learns_and_reports_every_epoch(loss):
    settings = _settings(MLPModel(hidden=(64,), batchnorm=True, dropout=0.1), loss=loss)
    epochs = []
    result = train_trial(settings, _data(settings), CPU, lambda e, m: epochs.append((e, m)))
    assert [e for e, _ in epochs] == [1, 2]
    assert set(epochs[0][1]) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds"}
    assert result.test_accuracy > 0.8  # chance is 0.1; seeds 0-7 give 0.85 ± 0.01, so no host's rounding crosses it
    assert epochs[1][1]["train_loss"] < epochs[0][1]["train_loss"]
    assert result.params_count == models.params_count(settings.model, MNIST)


def test_same_seed_same_result_other_seed_differs():
    settings = _settings(MLPModel(hidden=(32,), dropout=0.2))
    first = train_trial(settings, _data(settings), CPU)
    again = train_trial(settings, _data(settings), CPU)
    other = train_trial(_settings(MLPModel(hidden=(32,), dropout=0.2), seed=1), _data(settings), CPU)
    assert first.history == [dict(h, epoch_seconds=a["epoch_seconds"]) for h, a in zip(again.history, first.history)]
    assert first.test_accuracy == again.test_accuracy
    assert other.history[0]["train_loss"] != first.history[0]["train_loss"]
