"""A tiny end-to-end run on 3×32×32 data read through the real CIFAR-10 reader (synthetic batches in its exact
format): linear, mlp and cnn models, a pack, crop and flip, worker processes, then a report with every figure."""

from __future__ import annotations

import dataclasses

import matplotlib.image
import numpy as np
import pytest

from ablate import datasets
from ablate.cli import main
from tests.datasets.test_formats import _write_cifar

TRAIN, TEST = 1000, 300

STUDY = """
[study]
name = "tiny-cifar"
dataset = "cifar10"
design = "ablation"
seeds = [0, 1]

[data]
val_size = 200

[train]
epochs = 3
batch_size = 64
augment = { crop = 2, flip = true }

[model]
kind = "cnn"
blocks = [{ out = 6, padding = 1, pool = true }, { out = 8, padding = 1, pool = true }]

[[arm]]
name = "linear"
model = "linear"
train = { augment = {} }

[[arm]]
name = "mlp"
model = { kind = "mlp", hidden = [32] }

[execution]
pack = 2
max_workers = 1
"""


def _learnable_cifar(root) -> None:
    """CIFAR-format batches whose class is the colour and place of a bright square: learnable in a few epochs."""
    _write_cifar(root / "cifar-10-batches-py", tuple(f"data_batch_{k}" for k in range(1, 6)), "test_batch", "labels",
                 10, ("batches.meta", "label_names", datasets.get("cifar10").class_names))
    import pickle

    rng = np.random.default_rng(1)
    for name in (*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"):
        path = root / "cifar-10-batches-py" / name
        n = TEST if name == "test_batch" else TRAIN // 5
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 3, 32, 32))
        for k in range(10):  # class k: a bright square whose colour and place say k
            images[labels == k, k % 3, 4 + 2 * k : 12 + 2 * k, 8:20] += 180
        noisy = rng.random(n) < 0.2  # a fifth mislabelled, so that the best model still makes mistakes to show
        labels[noisy] = rng.integers(0, 10, int(noisy.sum()))
        path.write_bytes(pickle.dumps({"data": images.astype(np.uint8).reshape(n, -1), "labels": labels.tolist()},
                                      protocol=2))


@pytest.mark.slow
def test_a_cifar_shaped_study_trains_packs_and_reports(tmp_path, monkeypatch, swap_dataset):
    _learnable_cifar(tmp_path / "data")
    swap_dataset(dataclasses.replace(datasets.get("cifar10"), train_size=TRAIN, test_size=TEST))
    study = tmp_path / "tiny-cifar.toml"
    study.write_text(STUDY)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", str(study), "--tracking-uri", store, "--data-dir", str(tmp_path / "data")]) == 0
    monkeypatch.setenv("ABLATE_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "report" / "tiny-cifar.md"
    assert main(["report", "--tracking-uri", store, "--study", "tiny-cifar", "--out", str(out)]) == 0
    table = out.read_text()
    for arm in ("baseline", "linear", "mlp"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {arm} "))
        assert float(row.split("|")[4].strip(" *").split("±")[0]) > 30, row  # chance is 10%
    assert "30,730" in table  # the linear arm: 3,072 inputs × 10 classes + 10
    for figure in ("samples", "confusion", "mistakes", "templates", "curves", "test_accuracy"):
        pixels = matplotlib.image.imread(out.parent / f"tiny-cifar-{figure}.png")
        assert pixels.std() > 0.05, figure
    samples = matplotlib.image.imread(out.parent / "tiny-cifar-samples.png")[..., :3]
    assert (np.ptp(samples, axis=2) > 0.3).any()  # colour, not grey: its channels differ
