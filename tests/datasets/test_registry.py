"""The dataset registry: one registered dataset's shape and classes flow into models, sizes, MACs, normalisation,
augmentation, packing, the study file's validation and the report's figures — with nothing else changed.

The dataset here is synthetic and colour (3 × 12 × 10, four classes told apart by which channel is bright), so that
anything still assuming one grey channel, 28 × 28 pixels or ten classes fails."""

from __future__ import annotations

import math

import matplotlib.image
import numpy as np
import pytest
import torch

from ablate import datasets, models
from ablate.cli import main
from ablate.design import expand
from ablate.engine import train_pack, train_trial
from ablate.errors import SpecError
from ablate.run import InlineBackend, Loaded, prepare, run_study
from ablate.spec import (
    Augment,
    CNNModel,
    ConvBlock,
    DataSettings,
    LinearModel,
    MLPModel,
    TrainSettings,
    TrialSettings,
    parse_study,
)
from ablate.tracking import Tracker
from tests._helpers import QuietReporter
from tests.conftest import hooked_macs

NAME, SHAPE, CLASSES = "colours", (3, 12, 10), ("red", "green", "blue", "grey")
CPU = torch.device("cpu")


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    images = rng.integers(0, 160, (n, *SHAPE)).astype(np.int64)
    for k in range(3):
        images[labels == k, k] += 30  # red, green or blue a little brighter: separable, not trivially
    images[labels == 3] += 15  # grey: every channel a little brighter
    return images.clip(0, 255).astype(np.uint8), labels


def _read(folder) -> dict[str, np.ndarray]:
    train_images, train_labels = _images(900, seed=0)
    test_images, test_labels = _images(300, seed=1)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


def _offline(root) -> None:
    raise RuntimeError("no network in tests")


@pytest.fixture
def colours():
    dataset = datasets.register(
        datasets.Dataset(
            name=NAME,
            title="Colours",
            folder="Colours",
            files=(),
            shape=SHAPE,
            class_names=CLASSES,
            train_size=900,
            test_size=300,
            read=_read,
            download=_offline,
        )
    )
    yield dataset
    datasets.unregister(NAME)


CNN = CNNModel(
    blocks=(ConvBlock(out=6, padding=1, pool=True), ConvBlock(out=8, batchnorm=True)), head="linear"
).resolved()


@pytest.mark.parametrize(
    "spec",
    [
        LinearModel(),
        MLPModel(hidden=(16,), batchnorm=True),
        CNN,
        CNNModel(blocks=(ConvBlock(out=4), ConvBlock(out=len(CLASSES))), head="gap").resolved(),
    ],
)
def test_every_model_kind_follows_the_datasets_shape_and_classes(colours, spec):
    model = models.build_model(spec, colours)
    assert model.eval()(torch.zeros(2, *SHAPE)).shape == (2, len(CLASSES))
    assert models.params_count(spec, colours) == models.count_params(model)
    assert models.macs(spec, colours) == hooked_macs(model, SHAPE)
    if isinstance(spec, LinearModel):
        assert models.describe(spec, colours) == f"linear {math.prod(SHAPE)} → {len(CLASSES)}"


def test_the_gap_head_checks_the_class_count(colours):
    wrong = CNNModel(blocks=(ConvBlock(out=10),), head="gap").resolved()
    with pytest.raises(models.ModelError, match=f"must have out = {len(CLASSES)}"):
        models.params_count(wrong, colours)


def _trial(seed: int, model, **train) -> TrialSettings:
    return TrialSettings(NAME, seed, DataSettings(val_size=100), model, TrainSettings(epochs=2, batch_size=64, **train))


def test_normalisation_is_per_channel_and_training_learns(colours):
    data = datasets.load(NAME, DataSettings(val_size=100), "unused", CPU)
    assert data.train.images.shape[1:] == SHAPE and data.train.images.dtype == torch.uint8
    normalised = data.normalise(data.train.images)
    assert normalised.mean(dim=(0, 2, 3)).abs().max() < 0.05 and (normalised.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05
    linear = train_trial(_trial(0, LinearModel()), data, CPU)
    assert linear.test_accuracy > 0.6  # chance is 0.25
    augmented = train_trial(_trial(0, CNN, augment=Augment(rotation=10.0, translate=0.1)), data, CPU)
    assert augmented.history[1]["train_loss"] < augmented.history[0]["train_loss"] and augmented.test_accuracy > 0.35


def test_packed_trials_on_colour_images_equal_their_single_runs(colours):
    """Three input channels as grouped-convolution groups: at a negligible learning rate (so that the order of float
    sums cannot grow into a drift, see tests/engine/test_pack.py) a pack's trials see exactly their single runs'
    images."""
    data = datasets.load(NAME, DataSettings(val_size=100), "unused", CPU)
    trials = [_trial(seed, CNN, lr=1e-8, augment=Augment(rotation=7.0)) for seed in (0, 1)]
    for packed, single in zip(train_pack(trials, data, CPU), (train_trial(t, data, CPU) for t in trials)):
        assert packed.test_accuracy == pytest.approx(single.test_accuracy, abs=1e-6)
        for mine, theirs in zip(packed.history, single.history):
            assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-6)
            assert mine["val_accuracy"] == pytest.approx(theirs["val_accuracy"], abs=1e-6)


STUDY = f"""
[study]
name = "colours"
dataset = "{NAME}"
seeds = [0, 1]

[data]
val_size = 100

[train]
epochs = 2
batch_size = 64
augment = {{ rotation = 5 }}

[[stage]]
name = "linear"
model = "linear"

[[stage]]
name = "cnn"
model = {{ kind = "cnn", blocks = [{{ out = 6, padding = 1, pool = true }}, {{ out = 8 }}] }}
"""


def test_a_study_on_a_registered_dataset_runs_and_reports(colours, tmp_path, capsys):
    study = parse_study(STUDY, str(tmp_path / "colours.toml"))
    (tmp_path / "colours.toml").write_text(STUDY)
    trials = expand(study)
    assert trials[0].architecture == f"linear {math.prod(SHAPE)} → {len(CLASSES)}"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"

    prepared = prepare(
        Loaded(study, trials),
        tracking_uri=store,
        data_dir=tmp_path,
        overrides={"devices": "cpu", "max_workers": 1},
        backend=InlineBackend,
    )
    summary = run_study(prepared, QuietReporter())
    assert len(summary.finished) == 4 and summary.failed == []
    linear = [outcome.test_accuracy for trial, outcome in summary.finished if trial.stage == "linear"]
    assert len(linear) == 2 and min(linear) > 0.6  # it learned the colours (chance is 0.25), with mistakes to show

    out = tmp_path / "report" / "colours.md"
    assert main(["report", "--tracking-uri", store, "--study", "colours", "--out", str(out)]) == 0
    for figure in ("confusion", "mistakes", "templates", "curves", "test_accuracy", "samples"):
        pixels = matplotlib.image.imread(out.parent / f"colours-{figure}.png")
        assert pixels.std() > 0.05, figure  # something is drawn
    assert "| linear" in out.read_text()
    assert main(["report", "--tracking-uri", store, "--study", "colours", "--columns", "all"]) == 0
    assert "360 → 4" in capsys.readouterr().out  # the model column, drawn at the data's shape


def test_a_dataset_not_registered_is_a_spec_error_naming_the_known_ones():
    with pytest.raises(SpecError) as info:
        parse_study(STUDY.replace(NAME, "colors"), "bad.toml")
    assert info.value.path == "study.dataset" and "allowed: 'mnist'" in str(info.value)


def _dataset(name: str, shape: tuple[int, ...], names: tuple[str, ...]) -> datasets.Dataset:
    return datasets.Dataset(
        name=name,
        title=name.title(),
        folder="",
        files=(),
        shape=shape,
        class_names=names,
        train_size=0,
        test_size=0,
        read=_read,
        download=_offline,
    )


def _samples(data: datasets.Dataset, arrays: dict):
    """The samples grid drawn: the figure and its pixels (RGB, top row first)."""
    import matplotlib.pyplot as plt

    from ablate.report import _figures

    figure = _figures.samples_grid(data, arrays, plt)
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(int)
    plt.close(figure)
    return figure, pixels


def _pixel(pixels: np.ndarray, axes, down: float = 0.5) -> np.ndarray:
    """The pixel `down` of the way from an axes' top edge, at its middle (display y grows upwards)."""
    box = axes.get_window_extent()
    return pixels[pixels.shape[0] - 1 - int(box.y1 - down * box.height), int((box.x0 + box.x1) / 2)]


@pytest.mark.parametrize("classes, rows", [(4, 4), (100, 20)])
def test_the_samples_figure_has_a_row_per_class_up_to_twenty(classes, rows):
    from ablate.report import _figures

    data = _dataset("many", SHAPE, tuple(f"c{k}" for k in range(classes)))
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (20 * classes, *SHAPE), dtype=np.uint8),
        "train_labels": np.arange(20 * classes) % classes,
    }
    figure, pixels = _samples(data, arrays)
    labels = [axes.get_ylabel() for axes in figure.axes if axes.get_ylabel()]
    assert len(labels) == rows and labels[0] == "c0" and labels[-1] == f"c{classes - 1}"
    assert len(figure.axes) == rows * _figures.SAMPLES_PER_CLASS and pixels.std() > 20
    assert ("of its 100 classes" in figure.get_suptitle()) == (classes == 100)


def test_the_samples_figure_draws_colour_as_rgb_upright_at_the_datas_aspect():
    """Solid red, green, blue and white images under a grey band at the top: a channel swap (BGR) or mix, a flip or
    a stretched cell would each show at the pixels sampled."""
    hues = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)], dtype=np.uint8)
    labels = np.arange(40) % 4
    images = np.broadcast_to(hues[labels][:, :, None, None], (40, 3, 12, 20)).copy()
    images[:, :, :3] = 128
    figure, pixels = _samples(
        _dataset("hues", (3, 12, 20), ("red", "green", "blue", "white")),
        {"train_images": images, "train_labels": labels},
    )
    assert figure.get_suptitle() == "Hues training images (3×12×20)"
    rows = [figure.axes[8 * k : 8 * k + 8] for k in range(4)]
    assert [row[0].get_ylabel() for row in rows] == ["red", "green", "blue", "white"]
    for row, hue in zip(rows, hues):
        for axes in row:
            assert (
                np.abs(_pixel(pixels, axes, 0.6) - hue).max() <= 2
                and np.abs(_pixel(pixels, axes, 0.05) - 128).max() <= 2
            )
            box = axes.get_window_extent()
            assert box.width / box.height == pytest.approx(20 / 12, rel=0.03)


def test_the_samples_figure_draws_one_channel_grey_with_long_class_names():
    names = ("T-shirt/top", "Ankle boot", "o")
    labels = np.arange(30) % 3
    images = np.zeros((30, 1, 14, 9), dtype=np.uint8)
    images[:, 0, 4:10, 2:7] = (80 * (labels + 1))[:, None, None]  # a block darker per class, on a white ground
    figure, pixels = _samples(_dataset("greys", (1, 14, 9), names), {"train_images": images, "train_labels": labels})
    assert [axes.get_ylabel() for axes in figure.axes if axes.get_ylabel()] == list(names)
    assert figure.get_suptitle() == "Greys training images (1×14×9)"
    inks = []
    for axes in figure.axes:
        ground, ink = _pixel(pixels, axes, 0.1), _pixel(pixels, axes, 0.5)
        assert ground.tolist() == [255, 255, 255] and ink[0] == ink[1] == ink[2]  # grey, not a colour map
        inks.append(ink[0])
    assert inks[0] > inks[8] > inks[16]  # 80, 160, 240 on the 0–255 scale: darker, not stretched to one black
    label = figure.axes[8].yaxis.label.get_window_extent()
    assert label.x0 >= 0  # "Ankle boot" is inside the figure


def test_the_samples_figure_is_written_and_logged_before_any_trial_finished(colours, tmp_path):
    """A live study (only a running trial): the dataset comes from that trial's params."""
    import pandas as pd

    from ablate.report import StudyReport, write_figures
    from ablate.tracking import ROLE

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracker.client.create_experiment("live")
    parent = tracker.client.create_run(experiment, tags={ROLE: "parent"}).info.run_id
    trial = tracker.client.create_run(experiment, tags={ROLE: "trial"}).info.run_id
    tracker.client.log_param(trial, "dataset", NAME)
    report = StudyReport(
        name="live",
        description="",
        design="ladder",
        dataset=None,
        planned=4,
        parent_run_id=parent,
        table=pd.DataFrame({"stage": [], "test_accuracy_mean": []}),
        runs=pd.DataFrame(),
    )
    assert write_figures(tracker, report, tmp_path / "figs") == [tmp_path / "figs" / "live-samples.png"]
    assert matplotlib.image.imread(tmp_path / "figs" / "live-samples.png").std() > 0.05
    assert [a.path for a in tracker.client.list_artifacts(parent, "figures")] == ["figures/live-samples.png"]
    datasets.unregister(NAME)  # the data cannot be read: nothing to draw, as before
    assert write_figures(tracker, report, tmp_path / "none") == [] and not (tmp_path / "none").exists()
    datasets.register(colours)


@pytest.mark.parametrize("names, slanted", [(CLASSES, True), (tuple("0123456789"), False)])
def test_class_ticks_slant_long_names_and_shrink_with_many(names, slanted):
    import matplotlib.pyplot as plt

    from ablate.report import _output_figures

    figure, axes = plt.subplots()
    _output_figures._class_ticks(axes, names)
    ticks = axes.get_xticklabels()
    assert [t.get_text() for t in ticks] == list(names) and (ticks[0].get_rotation() == 45) == slanted
    few = ticks[0].get_fontsize()
    _output_figures._class_ticks(axes, tuple(f"class {k}" for k in range(100)))
    assert axes.get_xticklabels()[0].get_fontsize() < few  # smaller type with many classes
    plt.close(figure)
