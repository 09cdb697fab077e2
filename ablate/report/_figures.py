"""The report's figures, as PNGs beside the markdown and logged to the study's latest parent run.

Validation curves per arm, the primary metric per arm with 95% whiskers and a grid of training images per class
here; what the trained networks predicted (ablate.report's output figures) and what the best CNN makes of its input
(model figures) beside. Every figure takes the images' shape and the class names from the dataset registry, and its
data from where `ablate run` read it (ablate.report's sources); none downloads data. A figure that cannot be drawn
is named in the report's not_drawn, with why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ablate import datasets
from ablate.errors import AblateError
from ablate.report._draw import FigureFiles, log_figures, not_drawn, show
from ablate.report._load import DATASET_PARAM
from ablate.report._model_figures import model_figures
from ablate.report._output_figures import output_figures
from ablate.report._report import PRIMARY_METRICS, StudyReport
from ablate.report._sources import DataSource, data_source
from ablate.report._verdict_figure import verdict_figure
from ablate.tracking import ROLE, Tracker


def write_figures(tracker: Tracker, report: StudyReport, folder: Path, prefix: str | None = None,
                  data_dir: Path | None = None) -> list[Path]:
    """The report's figures as PNGs in `folder`, named `<prefix>-<figure>.png` (prefix: the study's name unless given),
    logged to the study's latest parent run too: validation curves per arm (mean with a min–max band over seeds) and
    the primary metric per arm with 95% confidence whiskers once a trial finished; the training images per class
    whenever the dataset is readable, before any trial finished too; then the rest. `data_dir`: --data-dir (else as
    ablate.report's sources decide). Each figure it cannot draw goes in report.not_drawn, with why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report.not_drawn = []
    files = FigureFiles(folder, prefix or report.name)
    finished = bool(len(report.table)) and bool(report.table[f"{report.metric}_mean"].notna().any())
    data, arrays, why = _data(tracker, report, data_source(report, data_dir))
    if arrays is None:
        not_drawn(report, ("samples",), why)
    if not finished and arrays is None:
        return []  # nothing finished yet (a live study, or every trial failed) and no images: nothing to draw
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if finished:
        paths = [files.path("curves"), files.path(report.metric)]
        _curves_figure(tracker, report, paths[0], plt)
        _arms_figure(report, paths[1], plt)
        if verdict_figure(report, files.path("verdicts"), plt):
            paths.append(files.path("verdicts"))
    if arrays is not None:
        paths.append(_samples_figure(report, data, arrays, files, plt))
    if finished:
        paths += output_figures(tracker, report, data, arrays, why, files, plt)
        paths += model_figures(tracker, report, data, arrays, why, files, plt)
    history = (report.search or {}).get("figure")
    if history is not None and history.exists():  # a search's history, drawn as its report was built: listed, logged
        paths.append(history)
    if report.parent_run_id:
        log_figures(tracker, report.parent_run_id, paths, files, report.name)
    report.figures = paths
    return paths


def _data(
    tracker: Tracker, report: StudyReport, source: DataSource
) -> tuple[datasets.Dataset | None, dict | None, str]:
    """The study's dataset and its arrays, each None where it cannot be had, and then why: a dataset this process does
    not know, a factory key naming a factory that cannot be imported here or is not the researcher's own code (the
    name is the store's), or files that are not in the data folder (never downloaded for a report)."""
    name = report.dataset or _started_dataset(tracker, report.name)
    if name is None:
        return None, None, "no trial of the study names its dataset (the trial runs' `dataset` param)"
    try:
        data = datasets.get(name, from_store=True)
    except AblateError as exc:  # ForeignFactory included
        return None, None, source.unimportable(str(exc))
    try:
        return data, datasets.read_arrays(name, source.folder, download=False), ""
    except AblateError as exc:
        return data, None, source.missing(str(exc))


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


def _samples_figure(report: StudyReport, data: datasets.Dataset, arrays: dict, files: FigureFiles, plt) -> Path:
    figure = samples_grid(data, arrays, plt)
    path = files.path("samples")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


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

