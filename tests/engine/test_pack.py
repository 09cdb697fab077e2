"""Packing: K trials as one batched network give the metrics of the K single runs (CPU).

Packed and single runs sum in other orders, and differently on every CPU, so each comparison is one that holds on any
host (see conftest.py): in float64 (the `float64` fixture) the two agree to the float32 accumulators that log the
metrics, at real learning rates; in float32 they agree to float noise at a negligible rate, and statistically, against
the spread between seeds, at a real one."""

from __future__ import annotations

from dataclasses import replace

import mlflow
import numpy as np
import pytest
import torch

from ablate import datasets
from ablate.cli import main
from ablate.design import Pack, pack_key, pack_trials
from ablate.engine import train_pack, train_trial
from ablate.spec import (
    Augment,
    CNNModel,
    ConvBlock,
    CosineSchedule,
    CustomModel,
    DataSettings,
    EarlyStopping,
    LinearModel,
    MLPModel,
    OneCycleSchedule,
    ResNetModel,
    StepSchedule,
    TrainSettings,
    TrialSettings,
    WarmupCosineSchedule,
)
from tests.conftest import DATA_DIR, FALSE_ALARM, TINY_STUDY, seed_noise_p

CPU = torch.device("cpu")
DATA = DataSettings(val_size=500, train_limit=1024, test_limit=500)
# One training computed two ways (in float64, or in float32 at a negligible rate) gives losses ≤ ~5e-7 apart here;
# another batch, mask or hyperparameter moves them by 1e-4 or more.
LOSS = 1e-5
EXACT = 1e-6  # an accuracy: the same count of images (a float32 quotient may differ in its last bits)
ONE_IMAGE = 1 / 500 + 1e-6  # float32 noise may flip a near-tie (val and test have 500 images, train 1,024)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return datasets.load("mnist", DATA, DATA_DIR, CPU)


def trial(seed: int, model, **train) -> TrialSettings:
    return TrialSettings("mnist", seed, DATA, model, replace(TrainSettings(epochs=3, batch_size=64), **train))


def _assert_same(singles, packed, accuracy: float = EXACT) -> None:
    """Every epoch's metrics and the test's; the logged rates exactly (the very floats a single run logs)."""
    for single, pack in zip(singles, packed):
        assert len(single.history) == len(pack.history) and single.tested_epoch == pack.tested_epoch
        for mine, theirs in zip(single.history, pack.history):
            assert mine["lr"] == theirs["lr"]
            for metric in ("train_loss", "val_loss"):
                assert mine[metric] == pytest.approx(theirs[metric], abs=LOSS), metric
            for metric in ("train_accuracy", "val_accuracy"):
                assert mine[metric] == pytest.approx(theirs[metric], abs=accuracy), metric
        assert single.test_accuracy == pytest.approx(pack.test_accuracy, abs=accuracy)
        assert single.test_loss == pytest.approx(pack.test_loss, abs=LOSS)


def test_four_packed_mlps_equal_their_single_runs(data, float64):
    """Seeds, lr, weight decay, init, dropout rates (0 included), schedules, smoothing and clipping all differ, at real
    rates: in float64 every trial's metrics and test predictions are its single run's."""
    data = float64(data)
    trials = [
        trial(0, MLPModel(hidden=(32,))),
        trial(1, MLPModel(hidden=(32,), dropout=0.5), lr=3e-3, init="kaiming_normal"),
        trial(2, MLPModel(hidden=(32,), dropout=0.2), weight_decay=1e-3, schedule=OneCycleSchedule()),
        trial(
            3, MLPModel(hidden=(32,)), label_smoothing=0.1, grad_clip=0.5, schedule=StepSchedule(step_size=1, gamma=0.5)
        ),
    ]
    packed = train_pack(trials, data, CPU)
    singles = [train_trial(t, data, CPU) for t in trials]
    _assert_same(singles, packed)
    for single, pack in zip(singles, packed):
        assert (single.predictions == pack.predictions).all()


def test_packed_batchnorm_sgd_momentum_and_early_stopping(data, float64):
    """Batch-norm statistics per trial, SGD momentum (cycled by onecycle), and trials stopping at different epochs,
    in float64."""
    data = float64(data)
    model = MLPModel(hidden=(32, 16), batchnorm=True)
    stop = EarlyStopping(metric="val_accuracy", patience=1, min_delta=0.02)
    trials = [
        trial(0, model, optimizer="sgd", lr=0.05, momentum=0.9, epochs=4, early_stopping=stop),
        trial(1, replace(model, dropout=0.3), optimizer="sgd", lr=0.05, schedule=CosineSchedule(), epochs=4),
        trial(2, model, optimizer="sgd", lr=0.05, momentum=0.5, schedule=OneCycleSchedule(), epochs=4),
        trial(
            3,
            replace(model, dropout=0.1),
            optimizer="sgd",
            lr=0.05,
            momentum=0.9,
            epochs=4,
            schedule=WarmupCosineSchedule(warmup_epochs=1),
        ),
    ]
    ended: list[tuple[int, int]] = []  # (trial, epochs it had run) as each is handed over
    packed = train_pack(trials, data, CPU, on_end=lambda i, result: ended.append((i, len(result.history))))
    singles = [train_trial(t, data, CPU) for t in trials]
    assert singles[0].stopped_early and len(singles[0].history) < 4  # the stopping case really happens
    _assert_same(singles, packed)
    assert ended[0] == (0, len(singles[0].history)) and sorted(i for i, _ in ended) == [0, 1, 2, 3]  # stopped: first


def test_packed_linear_models_with_mse_loss(data, float64):
    data = float64(data)
    trials = [
        trial(seed, LinearModel(), lr=lr, loss="mse", optimizer="adamw", weight_decay=0.01)
        for seed, lr in [(0, 1e-3), (1, 1e-2), (2, 3e-3)]
    ]
    packed = train_pack(trials, data, CPU)
    _assert_same([train_trial(t, data, CPU) for t in trials], packed)
    assert packed[1].weights.shape == (10, 784)


def test_class_templates_of_a_packed_linear_model_with_an_output_activation(data, float64):
    data = float64(data)
    trials = [trial(seed, MLPModel(hidden=(), output_activation="relu"), epochs=1) for seed in (0, 1)]
    packed = train_pack(trials, data, CPU)
    singles = [train_trial(t, data, CPU) for t in trials]
    for single, pack in zip(singles, packed):  # templates are handed over in float32: equal to its rounding
        assert pack.weights.shape == (10, 784) and abs(single.weights - pack.weights).max() < 1e-6


CNN = CNNModel(blocks=(ConvBlock(out=4, padding=1, pool=True), ConvBlock(out=8, pool=True, batchnorm=True)))


def _cnns(lr: float, epochs: int) -> list[TrialSettings]:
    """Three CNNs with batch norm, rotations, and their own dropout rates, weight decays and seeds."""
    return [
        trial(
            seed,
            replace(CNN, dropout=rate).resolved(),
            optimizer="adamw",
            lr=lr,
            weight_decay=wd,
            augment=Augment(rotation=7),
            epochs=epochs,
        )
        for seed, rate, wd in [(0, 0.0, 0.01), (1, 0.2, 0.0), (2, 0.1, 0.1)]
    ]


def test_packed_cnns_with_augmentation_see_their_single_runs_batches(data):
    """float32, the CPU's fast path (grouped channels-last convolutions), at a negligible rate, where the weights
    barely move: the runs agree to the rounding of one forward pass (~1e-7 here, a few times that with other
    kernels), which shows the same batches, rotations and dropout masks, since another rotation stream moves the
    training loss by 1e-3 to 1e-2."""
    trials = _cnns(lr=1e-8, epochs=1)
    packed = train_pack(trials, data, CPU)
    _assert_same([train_trial(t, data, CPU) for t in trials], packed, accuracy=ONE_IMAGE)


def test_packed_cnns_equal_their_single_runs_at_a_real_rate_in_float64(data, float64):
    """In float32 the runs drift apart at a real rate (Adam turns the rounding noise in the batch-normalised, so
    gradient-free, conv biases into full steps: 0.012 in test accuracy on an AVX2 EPYC); in float64 each trial's
    dropout rate, weight decay and seed give its single run's metrics to the logging's float32 rounding."""
    data = float64(data)
    trials = _cnns(lr=3e-3, epochs=1)
    packed = train_pack(trials, data, CPU)
    _assert_same([train_trial(t, data, CPU) for t in trials], packed)


def test_packed_cnns_train_as_well_as_their_single_runs(data):
    """float32 at a real rate, where the drift depends on the CPU's kernels: eight seeds packed and single, whose
    test accuracies must be indistinguishable against the spread between seeds (seed_noise_p, false-alarm rate
    FALSE_ALARM) — the drift is float noise grown by training, never a change of what is trained."""
    trials = [
        trial(
            seed,
            replace(CNN, dropout=0.1).resolved(),
            optimizer="adamw",
            lr=3e-3,
            weight_decay=0.01,
            augment=Augment(rotation=7),
            epochs=1,
        )
        for seed in range(8)
    ]
    packed = [r.test_accuracy for r in train_pack(trials, data, CPU)]
    singles = [train_trial(t, data, CPU).test_accuracy for t in trials]
    assert min(packed + singles) > 0.3  # they learn (chance is 0.1): two dead paths would look alike
    assert seed_noise_p(packed, singles) > FALSE_ALARM, (packed, singles)


@pytest.mark.parametrize("model", [
    ResNetModel(depth=1, widths=(4, 8)),  # post-activation, option A's padded shortcut
    ResNetModel(depth=(1, 2), widths=(4, 6), preact=True, shortcut="projection", dropout=0.2),
    ResNetModel(depth=1, widths=(4, 8), skip=False, norm="none", stem="imagenet"),
])
def test_packed_resnets_equal_their_single_runs_at_a_real_rate_in_float64(data, float64, model):
    """Residual blocks packed (their branches stacked, joined by the block's own join): in float64 each trial's seed,
    learning rate, weight decay and head dropout give its single run's metrics, and its saved network is its single
    run's."""
    data = float64(data)
    trials = [trial(seed, replace(model, dropout=rate).resolved(), optimizer="adamw", lr=lr, weight_decay=wd, epochs=1)
              for seed, rate, lr, wd in [(0, model.dropout, 3e-3, 0.01), (1, 0.0, 1e-2, 0.0)]]
    assert pack_key(trials[0]) == pack_key(trials[1]) is not None
    packed = train_pack(trials, data, CPU)
    singles = [train_trial(t, data, CPU) for t in trials]
    _assert_same(singles, packed)
    images = data.normalise(data.test.images[:50])
    for single, pack in zip(singles, packed):
        assert pack.channels_last and single.channels_last  # the CPU's layout for resnets too
        with torch.no_grad():
            assert torch.allclose(single.model.eval()(images), pack.model.eval()(images), atol=1e-6)


def test_the_seed_noise_comparison_keeps_its_false_alarm_rate():
    """seed_noise_p on simulated results: 8 seeds, accuracies spread by 0.04 between seeds and rounded to one image
    of 500, the two computations correlated by rho (from independent to the same run rounded differently). Below
    FALSE_ALARM at most that often (up to the simulation's own noise), whatever rho; a gap of 3 seed deviations is
    flagged most of the time."""
    from scipy import stats

    rng = np.random.default_rng(0)
    draws, n = 200_000, 8
    for rho in (0.0, 0.3, 0.9, 0.99):
        common, own = rng.standard_normal((2, draws, n)), rng.standard_normal((2, draws, n))
        first, second = (0.7 + 0.04 * (np.sqrt(rho) * common[0] + np.sqrt(1 - rho) * own[k]) for k in (0, 1))
        first, second = np.round(first * 500) / 500, np.round(second * 500) / 500
        alarms = (stats.ttest_ind(first, second, axis=1).pvalue < FALSE_ALARM).mean()
        assert alarms <= FALSE_ALARM + 3 * np.sqrt(FALSE_ALARM / draws), rho
        shifted = (stats.ttest_ind(first[:2000], second[:2000] - 3 * 0.04, axis=1).pvalue < FALSE_ALARM).mean()
        assert shifted > 0.5, rho
    assert seed_noise_p([0.70, 0.71, 0.69, 0.72], [0.70, 0.71, 0.69, 0.72]) == 1.0


def test_one_diverging_trial_leaves_its_pack_mates_alone(data, float64):
    data = float64(data)
    trials = [
        trial(0, MLPModel(hidden=(16,))),
        trial(1, MLPModel(hidden=(16,)), lr=float("inf")),
        trial(2, MLPModel(hidden=(16,)), lr=3e-3),
    ]
    packed = train_pack(trials, data, CPU)
    assert isinstance(packed[1], RuntimeError) and "not finite" in str(packed[1])
    _assert_same([train_trial(trials[i], data, CPU) for i in (0, 2)], [packed[0], packed[2]])


def test_pack_key_groups_only_what_can_share_a_network():
    base = trial(0, MLPModel(hidden=(32,)))
    same = [
        base,
        replace(base, seed=5),
        replace(base, model=MLPModel(hidden=(32,), dropout=0.5)),
        replace(base, train=replace(base.train, lr=0.1, init="orthogonal", schedule=CosineSchedule())),
    ]
    assert len({pack_key(s) for s in same}) == 1
    other = [
        replace(base, model=MLPModel(hidden=(64,))),
        replace(base, model=MLPModel(hidden=(32,), batchnorm=True)),
        replace(base, train=replace(base.train, batch_size=32)),
        replace(base, train=replace(base.train, optimizer="sgd")),
    ]
    assert len({pack_key(s) for s in [base, *other]}) == 5
    assert pack_key(replace(base, model=CustomModel(factory="tests.custom_models:tiny"))) is None


def test_pack_trials_chunks_each_group_in_order(tiny_trials):
    tasks = pack_trials(tiny_trials, 3)
    assert [type(t).__name__ for t in tasks] == ["Pack", "Trial", "Trial"]  # 4 mlp trials: 3 + 1; 1 linear
    assert sum(len(t.trials) if isinstance(t, Pack) else 1 for t in tasks) == len(tiny_trials)
    assert pack_trials(tiny_trials, 1) == tiny_trials


# The tiny study's header (2 seeds, 1,000 training images, 2 epochs) under this file's experiment name, keeping no
# trained models (saving them is tests/export/test_saved_models.py's, and takes a second or two each).
PACKING_HEADER = (
    TINY_STUDY.split("[[stage]]")[0].replace('name = "tiny"', 'name = "packing"')
    + """
[tracking]
models = "none"
"""
)
TINY_PACKING = (
    PACKING_HEADER
    + """
[[stage]]
name = "mlp"
model = { kind = "mlp", hidden = [32] }
[[stage]]
name = "mlp-wd"
train = { weight_decay = 0.01 }
model = { kind = "mlp", hidden = [32] }
[[stage]]
name = "linear"
model = { kind = "linear" }
"""
)


@pytest.fixture
def tiny_trials(write_study):
    from ablate.design import expand
    from ablate.spec import load_study

    study = write_study(TINY_PACKING)
    return [t for t in expand(load_study(study)) if not (t.stage == "linear" and t.seed == 1)]


def _runs(uri: str):
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["packing"])
    return runs[runs["tags.role"] == "trial"].set_index("tags.trial_hash").sort_index()


@pytest.mark.slow
def test_ablate_run_with_pack_logs_each_trial_as_its_own_run(write_study, new_store, capsys):
    """The CLI path: `--pack 4` gives the runs, statuses and metrics of an unpacked run of the same study. Workers
    train in float32, so the rates are negligible (real rates are compared in float64 above): each run's metrics are
    its own trial's to float noise, while two trials' differ by their seeds and dropout rates far more."""
    study = write_study(
        PACKING_HEADER.replace("seeds = [0, 1]", 'design = "grid"\nseeds = [0, 1]')
        + """
[model]
kind = "mlp"
hidden = [32]
[grid]
"model.dropout" = [0.0, 0.5]
"train.lr" = [1e-7, 1e-6]
"""
    )
    single, packed = new_store("single"), new_store("packed")
    assert main(["run", str(study), "--tracking-uri", single, "--max-workers", "1"]) == 0
    assert main(["run", str(study), "--tracking-uri", packed, "--max-workers", "2", "--pack", "4"]) == 0
    capsys.readouterr()
    assert main(["report", "--tracking-uri", packed, "--no-figures"]) == 0
    assert "8 of the 8 trials trained packed" in capsys.readouterr().out  # the report says what train time means
    one, four = _runs(single), _runs(packed)
    assert len(one) == len(four) == 8 and (four["status"] == "FINISHED").all()
    assert set(four["tags.pack_size"]) == {"4"} and four["tags.pack"].nunique() == 2
    assert (one["metrics.lr"] == four["metrics.lr"]).all()  # the very rates, not float32 copies
    for metric in ("metrics.val_loss", "metrics.test_loss", "metrics.train_loss"):
        assert (one[metric] - four[metric]).abs().max() < LOSS
    for metric in ("metrics.val_accuracy", "metrics.test_accuracy"):
        assert (one[metric] - four[metric]).abs().max() <= ONE_IMAGE
    # Yet the 8 trials' training losses are all far apart (seeds and dropout rates by 1e-3 or more, the two rates by
    # ~1e-3): a run logged with another trial's numbers would show.
    assert np.diff(np.sort(one["metrics.train_loss"].to_numpy())).min() > 10 * LOSS
    assert main(["run", str(study), "--tracking-uri", packed, "--pack", "4"]) == 0  # nothing left to do
    assert "8 already done" in capsys.readouterr().out


@pytest.mark.slow
def test_a_pack_whose_worker_dies_fails_all_its_trials_and_resume_runs_each_once(
    write_study, new_store, capsys, monkeypatch
):
    store = new_store()
    study = write_study(TINY_PACKING)
    monkeypatch.setenv("ABLATE_TEST_FAULTS", '{"mlp:1": "kill"}')
    assert main(["run", str(study), "--tracking-uri", store, "--max-workers", "1", "--pack", "4"]) == 1
    runs = _runs(store)
    lost = runs[runs["status"] == "FAILED"]
    assert len(lost) == 4 and set(lost["tags.reason"]) == {"worker-lost"}  # the whole pack of mlp trials
    assert (runs["status"] == "FINISHED").sum() == 2  # the linear pair, a pack of its own, still ran
    monkeypatch.delenv("ABLATE_TEST_FAULTS")
    assert main(["run", str(study), "--tracking-uri", store, "--pack", "4"]) == 0
    finished = _runs(store).query("status == 'FINISHED'")
    assert len(finished) == 6 and finished.index.is_unique
