"""The figures of what the trained networks predicted, from each trial's test outputs (test_outputs.npz: its test
predictions and their confidence, and a linear model's weights): the best arm's confusion matrix, most confident
mistakes and first predictions, the test accuracy per class and arm, and a linear arm's weight rows as templates.
Each one that cannot be drawn is named, with why, in the report's not_drawn."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ablate import datasets
from ablate.report._draw import FigureFiles, not_drawn, saved, show
from ablate.report._report import StudyReport
from ablate.tracking import OUTPUTS_ARTIFACT, Tracker


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


def _per_class_figure(report: StudyReport, data: datasets.Dataset, accuracy: pd.DataFrame, files: FigureFiles,
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
    return saved(figure, files.path("per-class"), plt)


def _reference_arm(report: StudyReport, accuracy: pd.DataFrame) -> str:
    """The baseline arm of the report's deltas, or the first arm with outputs where the baseline has none."""
    baseline = str(report.table["stage"].iloc[report.baseline])
    return baseline if baseline in accuracy.index else str(accuracy.index[0])


def _class_ticks_x(axes, names: tuple[str, ...]) -> None:
    axes.set_xticks(range(len(names)), names, rotation=90 if max(map(len, names)) > 2 else 0, fontsize=8)


def output_figures(tracker: Tracker, report: StudyReport, data: datasets.Dataset | None, arrays: dict | None,
                   why: str, files: FigureFiles, plt) -> list[Path]:
    """The best arm's most accurate run: confusion matrix, its 25 most confident mistakes and its first predictions;
    the accuracy per class and arm; a linear arm's class templates. `data` and `arrays` are None where the dataset or
    its files cannot be had, and `why` says why."""
    table, metric = report.table, report.metric
    means = table[f"{metric}_mean"]
    best = table["stage"].iloc[int(means.idxmax() if metric.endswith("accuracy") else means.idxmin())]
    found = _outputs(tracker, report.runs[report.runs["stage"] == best])
    paths: list[Path] = []
    if found is None:
        not_drawn(report, ("confusion", "mistakes", "predictions"), _no_outputs(best))
    elif arrays is None:
        not_drawn(report, ("confusion", "mistakes", "predictions"), why)
    else:
        outputs = found[1]
        labels = arrays["test_labels"][: len(outputs["predictions"])].astype(int)
        paths.append(_confusion_figure(report, data, best, labels, outputs, files, plt))
        paths.append(_mistakes_figure(report, data, best, labels, arrays["test_images"], outputs, files, plt))
        paths.append(_predictions_figure(report, data, best, labels, arrays["test_images"], outputs, files, plt))
    paths += _per_class(tracker, report, data, arrays, why, files, plt)
    return paths + _templates(tracker, report, data, why, files, plt)


def _no_outputs(arm: str) -> str:
    return (f"no run of {arm} kept its test outputs ({OUTPUTS_ARTIFACT}; runs logged before ablate kept them have "
            "none)")


def _per_class(tracker: Tracker, report: StudyReport, data: datasets.Dataset | None, arrays: dict | None, why: str,
               files: FigureFiles, plt) -> list[Path]:
    """The accuracy per class and arm, as a figure and (report.per_class) a table; none past PER_CLASS_MAX classes."""
    if data is not None and data.classes > PER_CLASS_MAX:
        return []
    if arrays is None:
        not_drawn(report, ("per-class",), why)
        return []
    accuracy = per_class_accuracy(tracker, report, arrays["test_labels"].astype(int), data.classes)
    if not len(accuracy):
        not_drawn(report, ("per-class",), f"no run kept its test outputs ({OUTPUTS_ARTIFACT})")
        return []
    report.per_class, report.class_names = accuracy, data.class_names
    return [_per_class_figure(report, data, accuracy, files, plt)]


def _templates(tracker: Tracker, report: StudyReport, data: datasets.Dataset | None, why: str, files: FigureFiles,
               plt) -> list[Path]:
    """The first linear arm's weight rows as class templates: they need the dataset's shape and class names, not its
    files."""
    table = report.table
    linear = [name for name, model in zip(table["stage"], table["architecture"]) if str(model).startswith("linear")]
    if not linear:
        return []
    found = _outputs(tracker, report.runs[report.runs["stage"] == linear[0]])
    if found is None or "weights" not in found[1]:
        not_drawn(report, ("templates",), _no_outputs(linear[0]).replace("test outputs", "weights in its test outputs"))
        return []
    if data is None:
        not_drawn(report, ("templates",), why)
        return []
    return [_templates_figure(report, data, linear[0], found[1]["weights"], files, plt)]


def _class_ticks(axes, names: tuple[str, ...]) -> None:
    """Class names on both axes, readable: long ones slanted, small type when there are many."""
    size = max(4.5, min(7.0, 250 / len(names)))
    slant = max(map(len, names)) > 3
    axes.set_xticks(range(len(names)), names, fontsize=size, rotation=45 if slant else 0,
                    ha="right" if slant else "center", rotation_mode="anchor")
    axes.set_yticks(range(len(names)), names, fontsize=size)


def _confusion_figure(report: StudyReport, data: datasets.Dataset, arm: str, labels: np.ndarray, outputs: dict,
                      files: FigureFiles, plt) -> Path:
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
    return saved(figure, files.path("confusion"), plt)


def _mistakes_figure(report: StudyReport, data: datasets.Dataset, arm: str, labels: np.ndarray, images: np.ndarray,
                     outputs: dict, files: FigureFiles, plt) -> Path:
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
    return saved(figure, files.path("mistakes"), plt)


def _predictions_figure(report: StudyReport, data: datasets.Dataset, arm: str, labels: np.ndarray,
                        images: np.ndarray, outputs: dict, files: FigureFiles, plt) -> Path:
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
    return saved(figure, files.path("predictions"), plt)


def _templates_figure(report: StudyReport, data: datasets.Dataset, arm: str, weights: np.ndarray, files: FigureFiles,
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
    return saved(figure, files.path("templates"), plt)


