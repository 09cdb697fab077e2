"""The CPU's fast paths for CNNs (channels-last layout, packing, `pack = "auto"`) give the old path's numbers: the same
dropout masks exactly, the same metrics to float noise at a negligible learning rate and to seed noise at a real one
(the layouts round differently, on every CPU in its own way: see conftest.py), and a result that does not depend on
how many workers ran it."""

from __future__ import annotations

from dataclasses import replace

import mlflow
import mlflow.pytorch
import pytest
import torch

from ablate import datasets
from ablate.cli import main
from ablate.engine import _pack as pack_module
from ablate.engine import _train as train_module
from ablate.engine import train_pack, train_trial
from ablate.models import CNNModel, ConvBlock, Dropout
from ablate.spec import Augment, DataSettings, TrainSettings, TrialSettings
from tests.conftest import DATA_DIR, FALSE_ALARM, TINY_STUDY, seed_noise_p

CPU = torch.device("cpu")
DATA = DataSettings(val_size=500, train_limit=512, test_limit=500)
TINY_CNN = CNNModel(batchnorm=True, dropout=0.2, head="gap", blocks=(
    ConvBlock(out=8, pool=True), ConvBlock(out=12, pool=True), ConvBlock(out=10, activation="none", batchnorm=False,
                                                                        dropout=0.0))).resolved()
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return datasets.load("mnist", DATA, DATA_DIR, CPU)


def _trial(seed: int, **train) -> TrialSettings:
    settings = TrainSettings(epochs=1, batch_size=64, augment=Augment(rotation=10.0))
    return TrialSettings("mnist", seed, DATA, TINY_CNN, replace(settings, **train))


@pytest.fixture
def old_layout(monkeypatch):
    """The engine as it was: every network contiguous (NCHW)."""
    def contiguous(kind, device):
        return torch.contiguous_format

    def use() -> None:
        monkeypatch.setattr(train_module, "conv_layout", contiguous)
        monkeypatch.setattr(pack_module, "conv_layout", contiguous)

    return use


def _close(new, old) -> None:
    """To float noise: the rounding of the same forward passes in other orders (~1e-7 in a mean loss), where another
    dropout mask, rotation or batch moves a training loss by 1e-3 or more; a near-tie's argmax may flip."""
    assert len(new.history) == len(old.history)
    for mine, theirs in zip(new.history, old.history):
        for metric in METRICS:
            tolerance = 1 / 500 + 1e-6 if metric.endswith("accuracy") else 1e-5
            assert mine[metric] == pytest.approx(theirs[metric], abs=tolerance), metric
    assert new.test_accuracy == pytest.approx(old.test_accuracy, abs=1 / 500 + 1e-6)
    assert new.test_loss == pytest.approx(old.test_loss, abs=1e-5)


def test_a_channels_last_dropout_mask_is_the_contiguous_one():
    x = torch.randn(4, 8, 5, 5)
    contiguous = Dropout(0.3).train()(x)
    channels_last = Dropout(0.3).train()(x.contiguous(memory_format=torch.channels_last))
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last, contiguous)
    assert 0 < (contiguous == 0).sum() < x.numel()  # a mask, not all or nothing


def test_channels_last_and_packing_give_the_old_paths_metrics(data, old_layout):
    """A tiny CNN with batch norm, dropout and rotation: single runs channels-last (the CPU's default now) and a
    pack of three against the old contiguous single runs, at a negligible rate, where the weights barely move and
    the layouts' other summation orders stay float noise: the same batches, rotations and dropout masks."""
    trials = [_trial(0, lr=1e-8), _trial(1, lr=3e-8), _trial(2, lr=1e-8, weight_decay=1e-3)]
    new = [train_trial(t, data, CPU) for t in trials]
    packed = train_pack(trials, data, CPU)
    assert all(r.channels_last for r in new + packed)
    old_layout()
    old = [train_trial(t, data, CPU) for t in trials]
    assert not any(r.channels_last for r in old)
    for mine, packed_one, theirs in zip(new, packed, old):
        _close(mine, theirs)
        _close(packed_one, theirs)


def test_channels_last_trains_as_well_as_the_contiguous_layout(data, old_layout):
    """At a real rate Adam turns the layouts' different rounding of the batch-normalised (so gradient-free) conv
    biases into full steps, and the runs drift apart by an amount that depends on the CPU's kernels: eight seeds
    in each layout, whose test accuracies must be indistinguishable against the spread between seeds (seed_noise_p,
    false-alarm rate FALSE_ALARM). Packing's drift is tested so in tests/engine/test_pack.py."""
    quick = replace(TINY_CNN, head="linear")  # learns in an epoch, where the global-pooling head needs more
    trials = [replace(_trial(seed, lr=1e-2), model=quick) for seed in range(8)]
    new = [train_trial(t, data, CPU).test_accuracy for t in trials]
    old_layout()
    old = [train_trial(t, data, CPU).test_accuracy for t in trials]
    assert min(new + old) > 0.3  # they learn (chance is 0.1): two dead layouts would look alike
    assert seed_noise_p(new, old) > FALSE_ALARM, (new, old)


# A negligible rate: workers train in float32, where packing's other rounding grows at a real rate (see above).
CNN_STUDY = TINY_STUDY.replace('name = "tiny"', 'name = "tinycnn"').replace(
    "batch_size = 128", "batch_size = 128\nlr = 1e-8").split("[[stage]]")[0] + """
[model]
kind = "cnn"
batchnorm = true
dropout = 0.1
head = "gap"
blocks = [{ out = 8, pool = true }, { out = 12, pool = true }, { out = 10, activation = "none", batchnorm = false }]

[[stage]]
name = "cnn"

[[stage]]
name = "cnn-rotated"
train = { augment = { rotation = 10.0 } }
"""


def _metrics(uri: str):
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tinycnn"])
    runs = runs[runs["tags.role"] == "trial"].set_index("tags.trial_hash").sort_index()
    return runs[[f"metrics.{m}" for m in (*METRICS, "test_accuracy", "test_loss")]]


@pytest.mark.slow
def test_a_cnns_results_do_not_depend_on_how_many_workers_or_auto_packing(write_study, new_store, monkeypatch):
    """1 worker = 2 workers, to the bit, channels-last (every CPU worker has one thread); `--pack auto` (made to pack
    here) to float noise; and each saved CNN model gives its run's logged test predictions exactly."""
    study = write_study(CNN_STUDY)
    unsaved = write_study(CNN_STUDY + '\n[tracking]\nmodels = "none"\n', "unsaved.toml")  # the same trials, faster
    stores = {name: new_store(name) for name in ("one", "two", "auto")}
    assert main(["run", str(study), "--tracking-uri", stores["one"], "--max-workers", "1"]) == 0
    assert main(["run", str(unsaved), "--tracking-uri", stores["two"], "--max-workers", "2"]) == 0
    import ablate.engine

    monkeypatch.setattr(ablate.engine, "packed_speedup", lambda *args, **kwargs: 2.0)
    assert main(["run", str(unsaved), "--tracking-uri", stores["auto"], "--pack", "auto"]) == 0
    one, two, auto = (_metrics(stores[name]) for name in ("one", "two", "auto"))
    assert len(one) == 4 and one.equals(two)
    losses = [c for c in one.columns if c.endswith("loss")]
    assert ((auto - one)[losses].abs() < 1e-5).all().all()
    assert ((auto - one).drop(columns=losses).abs() <= 1 / 500 + 1e-6).all().all()  # a near-tie may flip
    mlflow.set_tracking_uri(stores["auto"])
    runs = mlflow.search_runs(experiment_names=["tinycnn"])
    assert set(runs.loc[runs["tags.role"] == "trial", "tags.pack_size"]) == {"2"}
    import numpy as np

    mlflow.set_tracking_uri(stores["one"])
    test = datasets.load("mnist", DataSettings(val_size=500, train_limit=1000, test_limit=500), DATA_DIR, CPU).test
    saved = mlflow.search_runs(experiment_names=["tinycnn"], filter_string="tags.model = 'best'")
    assert len(saved) == 2
    for run_id in saved["run_id"]:
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
        logged = np.load(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="test_outputs.npz"))
        with torch.inference_mode():
            assert (model(test.images.float()).argmax(1).numpy() == logged["predictions"]).all()


def test_auto_packing_follows_the_probe_on_the_cpu_and_packs_on_a_gpu(monkeypatch):
    from ablate.design import Pack, expand, pack_trials
    from ablate.run import Slot, pack_size
    from ablate.spec import parse_study

    trials = expand(parse_study(CNN_STUDY))
    import ablate.engine

    for gain, sizes in ((1.5, [2, 2]), (1.05, [1, 1, 1, 1])):
        monkeypatch.setattr(ablate.engine, "packed_speedup", lambda *args, gain=gain, **kwargs: gain)
        notes: list[str] = []
        tasks = pack_trials(trials, pack_size("auto", [Slot(0, "cpu", 1)], notes))
        assert [len(t.trials) if isinstance(t, Pack) else 1 for t in tasks] == sizes
        assert len(notes) == 2 and f"{gain:.2f}×" in notes[0]
    tasks = pack_trials(trials, pack_size("auto", [Slot(0, "cuda:0", 1)], []))
    assert [len(t.trials) for t in tasks] == [2, 2]
    assert pack_size(3, [Slot(0, "cpu", 1)], []) == 3


def test_the_probe_measures_a_real_speedup():
    from ablate.engine import packed_speedup

    gain = packed_speedup([_trial(0), _trial(1)], CPU)
    assert 0.2 < gain < 10


def test_pack_accepts_auto_and_refuses_other_words():
    from ablate.errors import SpecError
    from ablate.spec import parse_study

    assert parse_study(CNN_STUDY + '\n[execution]\npack = "auto"\n').execution.pack == "auto"
    with pytest.raises(SpecError, match="execution.pack"):
        parse_study(CNN_STUDY + '\n[execution]\npack = "fast"\n')
    with pytest.raises(SpecError, match="execution.pack"):
        parse_study(CNN_STUDY + "\n[execution]\npack = 0\n")
