"""The report's figures, as PNGs beside the markdown and logged to the study's latest parent run.

Validation curves per arm, the primary metric per arm with 95% whiskers, and from the best
arm's most accurate run its confusion matrix and most confident mistakes; a linear model's
weight rows drawn as class templates; a grid of training images per class. Every figure takes
the images' shape and the class names from the dataset registry; none downloads data.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ablate import datasets
from ablate.errors import AblateError
from ablate.report._report import PRIMARY_METRICS, StudyReport
from ablate.tracking import OUTPUTS_ARTIFACT, Tracker


def write_figures(tracker: Tracker, report: StudyReport, folder: Path) -> list[Path]:
    """Validation curves per arm (mean with a min–max band over seeds) and the primary metric per arm with 95%
    confidence whiskers, as PNGs in `folder`, logged to the study's latest parent run too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not len(report.table) or report.table[f"{report.metric}_mean"].isna().all():
        return []  # nothing finished yet (a live study, or every trial failed): nothing to draw
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{report.name}-curves.png", folder / f"{report.name}-{report.metric}.png"]
    _curves_figure(tracker, report, paths[0], plt)
    _bar_figure(report, paths[1], plt)
    paths += _output_figures(tracker, report, folder, plt)
    if report.parent_run_id:
        for path in paths:
            tracker.log_artifact(report.parent_run_id, str(path), "figures")
    report.figures = paths
    return paths


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
        line, = axes.plot(mean.index, mean.values, label=arm if len(report.table) <= 12 else None, linewidth=1.5)
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
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = tracker.client.download_artifacts(run_id, OUTPUTS_ARTIFACT, dst_path=folder)
            except Exception:
                continue
            with np.load(path) as arrays:
                return run_id, {key: arrays[key] for key in arrays.files}
    return None


def _output_figures(tracker: Tracker, report: StudyReport, folder: Path, plt) -> list[Path]:
    """The best arm's most accurate run: confusion matrix and its 25 most confident mistakes; a linear arm's
    class templates. Skipped (no file) for runs logged before test outputs were kept, or without the data."""
    table, metric = report.table, report.metric
    means = table[f"{metric}_mean"]
    if means.isna().all():
        return []
    best = table["stage"].iloc[int(means.idxmax() if metric.endswith("accuracy") else means.idxmin())]
    found = _outputs(tracker, report.runs[report.runs["stage"] == best])
    paths: list[Path] = []
    if report.dataset is None:
        return paths
    try:  # a dataset this process does not know, or whose files are not here (never downloaded for a report)
        data = datasets.get(report.dataset)
        arrays = datasets.read_arrays(report.dataset, datasets.default_data_dir(), download=False)
    except AblateError:
        return paths
    paths.append(_samples_figure(report, data, arrays, folder, plt))
    if found is not None:
        _, outputs = found
        labels = arrays["test_labels"][: len(outputs["predictions"])].astype(int)
        paths.append(_confusion_figure(report, data, best, labels, outputs, folder, plt))
        paths.append(_mistakes_figure(report, data, best, labels, arrays["test_images"], outputs, folder, plt))
    linear = [name for name, model in zip(table["stage"], table["architecture"]) if str(model).startswith("linear")]
    for name in linear[:1]:
        found = _outputs(tracker, report.runs[report.runs["stage"] == name])
        if found is not None and "weights" in found[1]:
            paths.append(_templates_figure(report, data, name, found[1]["weights"], folder, plt))
    return paths


SAMPLES_PER_CLASS = 8
SAMPLE_CLASSES = 20  # rows of the samples figure at most: with 47 or 100 classes, an even choice of them


def _samples_figure(report: StudyReport, data: datasets.Dataset, arrays: dict, folder: Path, plt) -> Path:
    """The first training images of each class, a row per class named by it: what the study trained on."""
    images, labels = arrays["train_images"], arrays["train_labels"]
    shown = np.unique(np.linspace(0, data.classes - 1, min(data.classes, SAMPLE_CLASSES)).round().astype(int))
    _, height, width = data.shape
    cell = 0.9 / max(height, width)  # inches per pixel: a cell about 0.9 inch on its longer side
    figure, grid = plt.subplots(len(shown), SAMPLES_PER_CLASS, squeeze=False,
                                figsize=(1.6 + SAMPLES_PER_CLASS * width * cell, 0.7 + len(shown) * height * cell))
    for row, k in zip(grid, shown):
        for axes, index in zip(row, np.flatnonzero(labels == k)[:SAMPLES_PER_CLASS]):
            picture, cmap = _picture(images[index])
            axes.imshow(picture, cmap=cmap)
        for axes in row:
            axes.set_xticks([])
            axes.set_yticks([])
            axes.spines[:].set_visible(False)
        row[0].set_ylabel(data.class_names[k], rotation=0, ha="right", va="center", fontsize=8)
    some = f", {len(shown)} of its {data.classes} classes" if len(shown) < data.classes else ""
    figure.suptitle(f"{data.title} training images ({'×'.join(map(str, data.shape))}){some}", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / figure.get_figheight()))  # room for the title
    path = folder / f"{report.name}-samples.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _class_ticks(axes, names: tuple[str, ...]) -> None:
    """Class names on both axes, readable: long ones slanted, small type when there are many."""
    size = max(4.5, min(7.0, 250 / len(names)))
    slant = max(map(len, names)) > 3
    axes.set_xticks(range(len(names)), names, fontsize=size, rotation=45 if slant else 0, ha="right" if slant else "center")
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
    figure.tight_layout()
    path = folder / f"{report.name}-confusion.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _mistakes_figure(report: StudyReport, data: datasets.Dataset, arm: str, labels: np.ndarray, images: np.ndarray,
                     outputs: dict, folder: Path, plt) -> Path:
    predictions, confidences = outputs["predictions"].astype(int), outputs["confidences"].astype(float)
    wrong = np.flatnonzero(predictions != labels)
    worst = wrong[np.argsort(-confidences[wrong])][:25]
    figure, grid = plt.subplots(5, 5, figsize=(7, 7.8))
    for axes in grid.flat:
        axes.axis("off")
    names = data.class_names
    for axes, index in zip(grid.flat, worst):
        picture, cmap = _picture(images[index])
        axes.imshow(picture, cmap=cmap)
        axes.set_title(f"{names[predictions[index]]} ({confidences[index]:.2f}), true {names[labels[index]]}", fontsize=7,
                       color="red")
    figure.suptitle(f"{report.name}: the {len(worst)} most confident test mistakes of {arm}\n"
                    "(predicted class, its probability, true class)", fontsize=9)
    figure.tight_layout()
    path = folder / f"{report.name}-mistakes.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _templates_figure(report: StudyReport, data: datasets.Dataset, arm: str, weights: np.ndarray, folder: Path,
                      plt) -> Path:
    """A linear model's weight row per class, drawn at the images' shape: one channel in red (+) and blue (−)
    around zero, several as a colour image scaled to the row's range."""
    columns = 5
    rows = -(-data.classes // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(9, 2 * rows), squeeze=False)
    bound = float(np.abs(weights).max())
    channels, height, width = data.shape
    for axes in grid.flat:
        axes.axis("off")
    for k, axes in zip(range(data.classes), grid.flat):
        template = weights[k].reshape(data.shape)
        if channels == 1:
            axes.imshow(template[0], cmap="RdBu_r", vmin=-bound, vmax=bound)
        else:
            low, high = template.min(), template.max()
            axes.imshow(((template - low) / ((high - low) or 1.0)).transpose(1, 2, 0))
        axes.set_title(data.class_names[k])
    colours = "red +, blue −" if channels == 1 else "scaled to each row's range"
    figure.suptitle(f"{report.name}: {arm}'s weight row per class as a {height}×{width} template ({colours})", fontsize=9)
    figure.tight_layout()
    path = folder / f"{report.name}-templates.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _picture(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A (C, H, W) image as imshow takes it: three channels in colour, uint8 as it is, float (a factory's) scaled to
    its own range; any other count its first channel in grey (dark ink on white)."""
    if image.shape[0] != 3:
        return image[0], "gray_r"
    picture = image.transpose(1, 2, 0)
    if picture.dtype != np.uint8:
        low, high = float(picture.min()), float(picture.max())
        picture = (picture - low) / ((high - low) or 1.0)
    return picture, None


def _bar_figure(report: StudyReport, path: Path, plt) -> None:
    metric = report.metric
    table = report.table[report.table[f"{metric}_mean"].notna()]  # arms with no finished run have no bar
    means = table[f"{metric}_mean"]
    errors = [(m - lo if not pd.isna(lo) else 0, hi - m if not pd.isna(hi) else 0)
              for m, lo, hi in zip(means, table["ci_low"], table["ci_high"])]
    figure, axes = plt.subplots(figsize=(8, max(3, 0.3 * len(table) + 1.5)))
    positions = np.arange(len(table))[::-1]
    axes.barh(positions, means, xerr=np.array(errors).T, color="#4c72b0", ecolor="black", capsize=3)
    axes.set_yticks(positions, table["stage"], fontsize=7 if len(table) > 12 else 9)
    spread = (means.max() - means.min()) or 1.0
    axes.set_xlim(means.min() - spread - 0.5 * spread, means.max() + 0.6 * spread)
    axes.set_xlabel(PRIMARY_METRICS[metric] + " (mean, whiskers: 95% CI over seeds)")
    axes.set_title(f"{report.name}: {PRIMARY_METRICS[metric]} per arm")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

