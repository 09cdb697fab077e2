"""A packed trial's dropout masks are its single run's, to the bit (the CPU's counter-based stream), and a study with
dropout gives the same numbers on one worker as on two."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import mlflow
import pytest
import torch

from ablate import datasets, models
from ablate.cli import main
from ablate.engine import PackedNet, train_pack, train_trial
from ablate.models import _dropout
from ablate.spec import CNNModel, ConvBlock, DataSettings, MLPModel, ResNetModel, TrainSettings, TrialSettings
from tests.conftest import DATA_DIR, TINY_STUDY

CPU = torch.device("cpu")
DATA = DataSettings(val_size=200, train_limit=256, test_limit=200)
CNN = CNNModel(batchnorm=True, dropout=0.1, head="gap", blocks=(
    ConvBlock(out=6), ConvBlock(out=8, pool=True),
    ConvBlock(out=10, activation="none", batchnorm=False, dropout=0.0)))
# Three trials that pack together: other rates, one without dropout after its first block.
CNNS = [CNN.resolved(), replace(CNN, dropout=0.3).resolved(),
        replace(CNN, blocks=(replace(CNN.blocks[0], dropout=0.0), *CNN.blocks[1:])).resolved()]


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return datasets.load("mnist", DATA, DATA_DIR, CPU)


def _single_networks(specs, seeds):
    built = []
    for spec, seed in zip(specs, seeds):
        torch.manual_seed(seed)
        network = models.build_model(spec, datasets.get("mnist")).to(memory_format=torch.channels_last)
        models.seed_dropout(network, seed)
        built.append(network.train())
    return built


def test_each_slice_of_a_packed_dropout_is_its_single_runs_dropout_to_the_bit():
    seeds = [0, 5, 9]
    singles = _single_networks(CNNS, seeds)
    net = PackedNet(_single_networks(CNNS, seeds), seeds, torch.channels_last)
    x = torch.randn(4, 3 * 8, 12, 12).contiguous(memory_format=torch.channels_last)  # 3 trials' 8-channel maps
    first, layer = [layer for layer in net.layers if layer.keep is not None]  # after blocks 1 and 2
    for _ in range(3):  # steps
        packed = net._dropout(x, layer, grouped=True)
        for k, single in enumerate(singles):
            dropout = next(m for m in single.modules() if isinstance(m, models.Dropout) and m.site == layer.site)
            assert torch.equal(packed[:, 8 * k : 8 * (k + 1)], dropout(x[:, 8 * k : 8 * (k + 1)]))
    assert first.dropout[2] == 0 and torch.equal(net._dropout(torch.ones(2, 18, 4, 4), first, True)[:, 12:],
                                                 torch.ones(2, 6, 4, 4))  # no dropout there: kept whole


def _recording(monkeypatch) -> dict[str, Counter]:
    """Every mask drawn, as (key, shape, rate) — a mask is a function of these alone — under the phase named last."""
    drawn: dict[str, Counter] = {}
    draw = _dropout.dropout_noise

    def recording(shape, p, key, device="cpu", dtype=torch.float32):
        drawn[next(reversed(drawn))][(key, tuple(shape), p)] += 1
        return draw(shape, p, key, device, dtype)

    monkeypatch.setattr(_dropout, "dropout_noise", recording)
    return drawn


@pytest.mark.parametrize("specs", [CNNS, [MLPModel(hidden=(32, 16), dropout=rate) for rate in (0.2, 0.5, 0.0)],
                                   [ResNetModel(depth=1, widths=(4, 8), dropout=rate).resolved()
                                    for rate in (0.2, 0.5, 0.0)]],
                         ids=["cnn", "mlp", "resnet"])
def test_a_pack_draws_exactly_the_masks_of_its_single_runs(data, monkeypatch, specs):
    trials = [TrialSettings("mnist", seed, DATA, spec, TrainSettings(epochs=2, batch_size=64))
              for seed, spec in zip((0, 5, 9), specs)]
    drawn = _recording(monkeypatch)
    drawn["singles"] = Counter()
    for trial in trials:
        train_trial(trial, data, CPU, test=False)
    drawn["packed"] = Counter()
    train_pack(trials, data, CPU, test=False)
    assert drawn["packed"] == drawn["singles"]
    assert set(drawn["singles"].values()) == {1} and len(drawn["singles"]) >= 2 * 4 * 2  # 2 epochs × 4 steps × 2 layers


@pytest.mark.slow
def test_a_study_with_dropout_gives_the_same_numbers_on_one_worker_and_on_two(write_study, tmp_path, capsys):
    study = write_study(TINY_STUDY.replace('hidden = [32] }', 'hidden = [32], dropout = 0.5 }') + """
[[stage]]
name = "cnn"
model = { kind = "cnn", dropout = 0.2, head = "gap", blocks = [{ out = 6, pool = true },
          { out = 10, activation = "none", dropout = 0.0 }] }
""")
    one, two = f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
    assert main(["run", str(study), "--tracking-uri", one, "--devices", "cpu", "--max-workers", "1"]) == 0
    assert main(["run", str(study), "--tracking-uri", two, "--devices", "cpu", "--workers-per-device", "2"]) == 0
    assert "on 2 worker(s)" in capsys.readouterr().out
    columns = ["metrics.test_accuracy", "metrics.test_loss", "metrics.train_loss", "metrics.val_loss"]

    def trials(store: str):
        mlflow.set_tracking_uri(store)
        runs = mlflow.search_runs(experiment_names=["tiny"])
        return runs[runs["tags.role"] == "trial"].set_index("tags.trial_hash")[columns].sort_index()

    assert len(trials(one)) == 6 and trials(one).equals(trials(two))
