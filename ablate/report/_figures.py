"""The report's figures, as PNGs beside the markdown and logged to the study's latest parent run.

Validation curves per arm, the primary metric per arm with 95% whiskers, and from the best
arm's most accurate run its confusion matrix and most confident mistakes; a linear model's
weight rows drawn as class templates; a grid of training images per class. Every figure takes
the images' shape and the class names from the dataset registry; none downloads data.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ablate import datasets
from ablate.errors import AblateError
from ablate.report._draw import saved, show
from ablate.report._load import DATASET_PARAM
from ablate.report._model_figures import model_figures
from ablate.report._report import PRIMARY_METRICS, StudyReport
from ablate.tracking import OUTPUTS_ARTIFACT, ROLE, Tracker


def write_figures(tracker: Tracker, report: StudyReport, folder: Path) -> list[Path]:
    """Validation curves per arm (mean with a min–max band over seeds) and the primary metric per arm with 95%
    confidence whiskers, as PNGs in `folder`, logged to the study's latest parent run too; the training images per
    class whenever the dataset is readable, before any trial finished too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finished = bool(len(report.table)) and bool(report.table[f"{report.metric}_mean"].notna().any())
    images = _images(tracker, report)
    if not finished and images is None:
        return []  # nothing finished yet (a live study, or every trial failed) and no images: nothing to draw
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if finished:
        paths = [folder / f"{report.name}-curves.png", folder / f"{report.name}-{report.metric}.png"]
        _curves_figure(tracker, report, paths[0], plt)
        _arms_figure(report, paths[1], plt)
    if images is not None:
        paths.append(_samples_figure(report, *images, folder, plt))
        if finished:
            paths += _output_figures(tracker, report, *images, folder, plt)
    if report.parent_run_id:
        for path in paths:
            tracker.log_artifact(report.parent_run_id, str(path), "figures")
    report.figures = paths
    return paths


def _images(tracker: Tracker, report: StudyReport) -> tuple[datasets.Dataset, dict] | None:
    """The study's dataset and its arrays, or None: a dataset this process does not know, or whose files are not
    here (never downloaded for a report), or a factory key naming a factory that is not the researcher's own code
    (the name is the store's: one line says so)."""
    name = report.dataset or _started_dataset(tracker, report.name)
    if name is None:
        return None
    try:
        return (datasets.get(name, from_store=True),
                datasets.read_arrays(name, datasets.data_folder(), download=False))
    except datasets.ForeignFactory as exc:
        print(f"ablate report: no figures of {report.name} that need its data: {exc}", file=sys.stderr)
        return None
    except AblateError:
        return None


def _started_dataset(tracker: Tracker, study: str) -> str | None:
    """The dataset of a study none of whose trials finished, from a running or failed trial's params (a trial logs
    them when it starts; one study trains on one dataset)."""
    experiment = tracker.client.get_experiment_by_name(study)
    if experiment is None:
        return None
    runs = tracker.client.search_runs([experiment.experiment_id], f"tags.{ROLE} = 'trial'", max_results=1)
    return runs[0].data.params.get(DATASET_PARAM) if runs else None


def _curves_figure(tracker: Tracker, report: StudyReport, path: Path, plt) -> None:
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for arm in report.table["stage"]:
        runs = report.runs[report.runs["stage"] == arm]
        curves = []
        for run_id in runs["run_id"]:
            history = sorted(tracker.client.get_metric_history(run_id, "val_accuracy"), key=lambda m: m.step)
            if history:  # a run logged by hand may have no curve
                curves.append(pd.Series({m.step: 100 * m.value for m in history}, dtype=float))
        if not curves:
            continue
        frame = pd.concat(curves, axis=1)
        mean = frame.mean(axis=1)
        marker = "o" if len(frame) <= 3 else None  # a curve of one or two epochs is a dot or a stub without them
        line, = axes.plot(mean.index, mean.values, label=arm if len(report.table) <= 12 else None, linewidth=1.5,
                          marker=marker)
        axes.fill_between(frame.index, frame.min(axis=1), frame.max(axis=1), color=line.get_color(), alpha=0.2)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title(f"{report.name}: validation accuracy per epoch (mean, band = min–max over seeds)")
    if len(report.table) <= 12:
        axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _outputs(tracker: Tracker, runs: pd.DataFrame) -> tuple[str, dict] | None:
    """The test outputs a run logged (the most accurate run first), or None for runs made before they were logged."""
    for run_id in runs.sort_values("test_accuracy", ascending=False)["run_id"]:
        outputs = _run_outputs(tracker, run_id)
        if outputs is not None:
            return run_id, outputs
    return None


def _run_outputs(tracker: Tracker, run_id: str) -> dict | None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = tracker.client.download_artifacts(run_id, OUTPUTS_ARTIFACT, dst_path=folder)
        except Exception:  # MLflow raises several types for a missing artifact
            return None
        with np.load(path) as arrays:
            return {key: arrays[key] for key in arrays.files}


PER_CLASS_MAX = 20  # classes a per-class figure shows at most: beyond, its cells are unreadable


def per_class_accuracy(tracker: Tracker, report: StudyReport, labels: np.ndarray, classes: int) -> pd.DataFrame:
    """Test accuracy per class (columns) of each arm (rows, in the table's order): each run's accuracy on the test
    images of that class, averaged over the arm's runs that kept their test outputs."""
    rows = {}
    for arm in report.table["stage"]:
        per_run = []
        for run_id in report.runs.loc[report.runs["stage"] == arm, "run_id"]:
            outputs = _run_outputs(tracker, run_id)
            if outputs is None:
                continue
            predictions = outputs["predictions"].astype(int)
            truth = labels[: len(predictions)]
            per_run.append([(predictions[truth == c] == c).mean() if (truth == c).any() else np.nan
                            for c in range(classes)])
        if per_run:
            rows[arm] = np.nanmean(np.array(per_run, dtype=float), axis=0)
    return pd.DataFrame.from_dict(rows, orient="index")


def _per_class_figure(report: StudyReport, data: datasets.Dataset, accuracy: pd.DataFrame, folder: Path,
                      plt) -> Path:
    """Arms × classes: the test accuracy per class (left) and its difference from the baseline arm's (right, the
    reference row), so that an arm's gain or loss shows on the classes where it happens."""
    percent = 100 * accuracy.to_numpy()
    reference = _reference_arm(report, accuracy)
    delta = percent - percent[list(accuracy.index).index(reference)]
    height = max(2.5, 0.35 * len(accuracy) + 1.6)
    figure, (left, right) = plt.subplots(1, 2, figsize=(min(16, 4 + 0.9 * accuracy.shape[1]), height), sharey=True)
    spread = float(np.nanmax(np.abs(delta))) or 1.0
    for axes, values, cmap, span, title in (
        (left, percent, "viridis", {}, "test accuracy per class (%)"),
        (right, delta, "RdBu", {"vmin": -spread, "vmax": spread}, f"Δ vs {reference} (pts)"),
    ):
        image = axes.imshow(values, cmap=cmap, aspect="auto", **span)
        figure.colorbar(image, ax=axes, fraction=0.046)
        _class_ticks_x(axes, data.class_names[: accuracy.shape[1]])
        axes.set_title(title, fontsize=10)
        if values.size <= 400:
            for (row, col), value in np.ndenumerate(values):
                if not np.isnan(value):
                    dark = value < np.nanmean(values) if axes is left else abs(value) > 0.6 * spread
                    axes.text(col, row, f"{value:.1f}" if axes is left else f"{value:+.1f}", ha="center", va="center",
                              fontsize=6, color="white" if dark else "black")
    left.set_yticks(range(len(accuracy)), accuracy.index, fontsize=7 if len(accuracy) > 12 else 9)
    figure.suptitle(f"{report.name}: test accuracy per class and arm (mean over seeds)")
    return saved(figure, folder / f"{report.name}-per-class.png", plt)


def _reference_arm(report: StudyReport, accuracy: pd.DataFrame) -> str:
    """The baseline arm of the report's deltas, or the first arm with outputs where the baseline has none."""
    baseline = str(report.table["stage"].iloc[report.baseline])
    return baseline if baseline in accuracy.index else str(accuracy.index[0])


def _class_ticks_x(axes, names: tuple[str, ...]) -> None:
    axes.set_xticks(range(len(names)), names, rotation=90 if max(map(len, names)) > 2 else 0, fontsize=8)


def _output_figures(tracker: Tracker, report: StudyReport, data: datasets.Dataset, arrays: dict, folder: Path,
                    plt) -> list[Path]:
    """The best arm's most accurate run: confusion matrix and its 25 most confident mistakes; a linear arm's
    class templates. Skipped (no file) for runs logged before test outputs were kept."""
    table, metric = report.table, report.metric
    means = table[f"{metric}_mean"]
    best = table["stage"].iloc[int(means.idxmax() if metric.endswith("accuracy") else means.idxmin())]
    found = _outputs(tracker, report.runs[report.runs["stage"] == best])
    paths: list[Path] = []
    if found is not None:
        _, outputs = found
        labels = arrays["test_labels"][: len(outputs["predictions"])].astype(int)
        paths.append(_confusion_figure(report, data, best, labels, outputs, folder, plt))
        paths.append(_mistakes_figure(report, data, best, labels, arrays["test_images"], outputs, folder, plt))
        paths.append(_predictions_figure(report, data, best, labels, arrays["test_images"], outputs, folder, plt))
    if data.classes <= PER_CLASS_MAX:
        accuracy = per_class_accuracy(tracker, report, arrays["test_labels"].astype(int), data.classes)
        if len(accuracy):
            report.per_class, report.class_names = accuracy, data.class_names
            paths.append(_per_class_figure(report, data, accuracy, folder, plt))
    paths += model_figures(tracker, report, data, arrays, folder, plt)
    linear = [name for name, model in zip(table["stage"], table["architecture"]) if str(model).startswith("linear")]
    for name in linear[:1]:
        found = _outputs(tracker, report.runs[report.runs["stage"] == name])
        if found is not None and "weights" in found[1]:
            paths.append(_templates_figure(report, data, name, found[1]["weights"], folder, plt))
    return paths


SAMPLES_PER_CLASS = 8
SAMPLE_CLASSES = 20  # rows of the samples figure at most: with 47 or 100 classes, an even choice of them


def samples_grid(data: datasets.Dataset, arrays: dict, plt):
    """The first training images of each class (at most SAMPLE_CLASSES classes, evenly chosen), a row per class named
    by it, at the images' own aspect ratio: what the study trained on. The figure, still open."""
    images, labels = arrays["train_images"], arrays["train_labels"]
    shown = np.unique(np.linspace(0, data.classes - 1, min(data.classes, SAMPLE_CLASSES)).round().astype(int))
    size, layout = _grid_layout(data.shape, len(shown), max(len(data.class_names[k]) for k in shown))
    figure, grid = plt.subplots(len(shown), SAMPLES_PER_CLASS, squeeze=False, figsize=size, gridspec_kw=layout)
    for row, k in zip(grid, shown):
        for axes, index in zip(row, np.flatnonzero(labels == k)[:SAMPLES_PER_CLASS]):
            show(axes, images[index])
        for axes in row:
            axes.set_xticks([])
            axes.set_yticks([])
            axes.spines[:].set_color("#c8c8c8")  # a faint frame: a white image or a white background still shows
        row[0].set_ylabel(data.class_names[k], rotation=0, ha="right", va="center", fontsize=8)
    some = f", {len(shown)} of its {data.classes} classes" if len(shown) < data.classes else ""
    figure.suptitle(f"{data.title} training images ({'×'.join(map(str, data.shape))}){some}", fontsize=9,
                    y=1 - 0.12 / size[1], va="top")
    return figure


def _grid_layout(shape: tuple[int, ...], rows: int, longest: int) -> tuple[tuple[float, float], dict]:
    """Figure size and margins, in inches, for a grid of cells at the images' aspect ratio with thin gaps between:
    tight_layout would stretch the gaps instead when the images are not square."""
    _, height, width = shape
    scale = 0.9 / max(height, width)  # inches per pixel: a cell about 0.9 inch on its longer side
    cell_w, cell_h, gap = width * scale, height * scale, 0.08
    left, top, bottom = 0.25 + 0.075 * longest, 0.45, 0.1  # the longest row label at 8 pt; the title
    grid_w = SAMPLES_PER_CLASS * cell_w + (SAMPLES_PER_CLASS - 1) * gap
    grid_h = rows * cell_h + (rows - 1) * gap
    size = (max(left + grid_w + 0.1, 5.0), top + grid_h + bottom)
    return size, {"left": left / size[0], "right": (left + grid_w) / size[0], "bottom": bottom / size[1],
                  "top": 1 - top / size[1], "wspace": gap / cell_w, "hspace": gap / cell_h}


def _samples_figure(report: StudyReport, data: datasets.Dataset, arrays: dict, folder: Path, plt) -> Path:
    figure = samples_grid(data, arrays, plt)
    path = folder / f"{report.name}-samples.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _class_ticks(axes, names: tuple[str, ...]) -> None:
    """Class names on both axes, readable: long ones slanted, small type when there are many."""
    size = max(4.5, min(7.0, 250 / len(names)))
    slant = max(map(len, names)) > 3
    axes.set_xticks(range(len(names)), names, fontsize=size, rotation=45 if slant else 0,
                    ha="right" if slant else "center", rotation_mode="anchor")
    axes.set_yticks(range(len(names)), names, fontsize=size)


def _confusion_figure(report: StudyReport, data: datasets.Dataset, arm: str, labels: np.ndarray, outputs: dict,
                      folder: Path, plt) -> Path:
    classes = data.classes
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (labels, outputs["predictions"].astype(int)), 1)
    side = 6 if classes <= 20 else min(16, 6 + classes / 10)
    figure, axes = plt.subplots(figsize=(side, side * 0.92))
    image = axes.imshow(matrix, cmap="Blues")
    if classes <= 20:  # counts in the cells while they fit
        for i in range(classes):
            for j in range(classes):
                axes.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                          color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    _class_ticks(axes, data.class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{report.name}: confusion matrix of {arm} (best run, test set)", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046)
    return saved(figure, folder / f"{report.name}-confusion.png", plt)


def _mistakes_figure(report: StudyReport, data: datasets.Dataset, arm: str, labels: np.ndarray, images: np.ndarray,
                     outputs: dict, folder: Path, plt) -> Path:
    predictions, confidences = outputs["predictions"].astype(int), outputs["confidences"].astype(float)
    wrong = np.flatnonzero(predictions != labels)
    worst = wrong[np.argsort(-confidences[wrong])][:25]
    figure, grid = plt.subplots(5, 5, figsize=(7, 8.4))
    for axes in grid.flat:
        axes.axis("off")
    names = data.class_names
    for axes, index in zip(grid.flat, worst):
        show(axes, images[index])
        # two lines: "T-shirt/top (0.97), true Ankle boot" on one would run into the next cell's title
        axes.set_title(f"{names[predictions[index]]} ({confidences[index]:.2f})\ntrue {names[labels[index]]}",
                       fontsize=7, color="red")
    figure.suptitle(f"{report.name}: the {len(worst)} most confident test mistakes of {arm}\n"
                    "(predicted class, its probability, true class)", fontsize=9)
    return saved(figure, folder / f"{report.name}-mistakes.png", plt)


def _predictions_figure(report: StudyReport, data: datasets.Dataset, arm: str, labels: np.ndarray,
                        images: np.ndarray, outputs: dict, folder: Path, plt) -> Path:
    """The first test images as the model saw them, each titled with its prediction (green when right, red when
    wrong) and, when wrong, the true class: what a reader checks a model on first."""
    predictions = outputs["predictions"].astype(int)
    shown = min(len(predictions), 30)
    figure, grid = plt.subplots(5, 6, figsize=(7.4, 7.2))
    names = data.class_names
    for axes in grid.flat:
        axes.axis("off")
    for index, axes in zip(range(shown), grid.flat):
        show(axes, images[index])
        right = predictions[index] == labels[index]
        title = names[predictions[index]] if right else f"{names[predictions[index]]}\ntrue {names[labels[index]]}"
        axes.set_title(title, fontsize=7, color="green" if right else "red")
    wrong = int((predictions[:shown] != labels[:shown]).sum())
    figure.suptitle(f"{report.name}: the first {shown} test images with {arm}'s predictions (best run)\n"
                    f"green: right; red: wrong, with the true class ({wrong} of {shown})", fontsize=9)
    return saved(figure, folder / f"{report.name}-predictions.png", plt)


def _templates_figure(report: StudyReport, data: datasets.Dataset, arm: str, weights: np.ndarray, folder: Path,
                      plt) -> Path:
    """A linear model's weight row per class, drawn at the images' shape: one channel in red (+) and blue (−)
    around zero, three as a colour image around mid grey scaled to the row's largest weight."""
    columns = 5
    rows = -(-data.classes // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(9, 0.4 + 2.1 * rows), squeeze=False)
    bound = float(np.abs(weights).max())
    channels, height, width = data.shape
    for axes in grid.flat:
        axes.axis("off")
    for k, axes in zip(range(data.classes), grid.flat):
        template = weights[k].reshape(data.shape)
        if channels != 3:  # one channel (any other count: its first, as picture_of draws them)
            axes.imshow(template[0], cmap="RdBu_r", vmin=-bound, vmax=bound)
        else:  # zero at mid grey, so a weight's sign shows as its channel brighter or darker (min–max would hide it)
            row_bound = float(np.abs(template).max()) or 1.0
            axes.imshow((0.5 + template / (2 * row_bound)).transpose(1, 2, 0))
        axes.set_title(data.class_names[k], fontsize=9)
    colours = "red +, blue −" if channels != 3 else "per channel: grey 0, brighter +, darker −"
    figure.suptitle(f"{report.name}: {arm}'s weight row per class as a {height}×{width} template ({colours})",
                    fontsize=9)
    return saved(figure, folder / f"{report.name}-templates.png", plt)


def _arms_figure(report: StudyReport, path: Path, plt) -> None:
    """The primary metric per arm as dots with 95% whiskers, the first arm's mean as a dashed line. Dots, not bars:
    a bar's length reads as a proportion, and on an axis cut to the arms' range (the only one that shows their
    differences) a bar from 84% made a 92% model look half as good as a 97% one."""
    metric = report.metric
    table = report.table[report.table[f"{metric}_mean"].notna()]  # arms with no finished run have no dot
    means = table[f"{metric}_mean"]
    errors = [(m - lo if not pd.isna(lo) else 0, hi - m if not pd.isna(hi) else 0)
              for m, lo, hi in zip(means, table["ci_low"], table["ci_high"])]
    figure, axes = plt.subplots(figsize=(8, max(3, 0.3 * len(table) + 1.5)))
    positions = np.arange(len(table))[::-1]
    axes.errorbar(means, positions, xerr=np.array(errors).T, fmt="o", color="#4c72b0", ecolor="black", capsize=3,
                  markersize=5)
    axes.axvline(means.iloc[0], color="grey", linestyle="--", linewidth=1)
    axes.set_yticks(positions, table["stage"], fontsize=7 if len(table) > 12 else 9)
    axes.set_ylim(-0.7, len(table) - 0.3)
    axes.margins(x=0.06)
    axes.set_xlabel(f"{PRIMARY_METRICS[metric]} (dot: mean; whiskers: 95% CI over seeds; dashed: "
                    f"{table['stage'].iloc[0]}, the first arm)")
    axes.set_title(f"{report.name}: {PRIMARY_METRICS[metric]} per arm")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

