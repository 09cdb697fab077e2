"""Figures that look inside a trained network: the best convolutional network's (cnn or resnet) first-layer filters and
what its conv blocks (a resnet's stem and stages) make of a few test images. They read the run's saved model
(ablate.tracking's models), rebuilt as ablate's network (ablate.export's load_saved, which runs nothing the store
holds), so a study trained with `[tracking] models = "none"` has none, and a model load_saved refuses (a pickle, say)
gives none, named with why in the report's not_drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ablate import datasets
from ablate.errors import AblateError
from ablate.report._draw import FigureFiles, log_figures, not_drawn, saved, show
from ablate.report._report import StudyReport
from ablate.tracking import Tracker

ACTIVATION_IMAGES = 4  # test images the activation figure follows, each of another class
CONVOLUTIONAL = ("cnn", "resnet")  # how the architectures of the kinds with conv layers begin (their descriptions)


def model_figures(tracker: Tracker, report: StudyReport, data: datasets.Dataset | None, arrays: dict | None, why: str,
                  files: FigureFiles, plt) -> list[Path]:
    """From the best arm with a convolutional saved model: its first conv layer's filters (they need the dataset, not
    its files) and its activation maps (they need its test images); both logged to that model's run too. None when no
    arm has one; `data` and `arrays` are None where the dataset or its files cannot be had, and `why` says why."""
    from torch import nn

    from ablate.export import load_saved

    found = _best_cnn(report)
    if found is None:
        return []
    if data is None:
        not_drawn(report, ("filters", "activations"), why)
        return []
    arm, run_id = found
    try:
        model, about, _ = load_saved(tracker, run_id)
    except AblateError as exc:  # a model it will not or cannot load (StoreError): the rest of the report stands
        not_drawn(report, ("filters", "activations"), str(exc))
        return []
    convs = [m for m in model.net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return []
    where = f"{arm} (seed {about['seed']}, test acc {100 * about['test_accuracy']:.2f}%)"
    paths = [_filters_figure(report, data, convs[0].weight.detach().numpy(), where, files, plt)]
    if arrays is None:
        not_drawn(report, ("activations",), why)
    else:
        paths.append(_activations_figure(report, data, model, arrays, where, files, plt))
    log_figures(tracker, run_id, paths, files, report.name)
    return paths


def _best_cnn(report: StudyReport) -> tuple[str, str] | None:
    """(arm, run id) of the best arm, by the primary metric, whose architecture has conv layers and whose model was
    saved."""
    table, metric = report.table, report.metric
    convolutional = table[table["architecture"].astype(str).str.startswith(CONVOLUTIONAL)
                          & table["stage"].isin(report.models)]
    if convolutional.empty:
        return None
    means = convolutional[f"{metric}_mean"]
    best = means.idxmax() if metric.endswith("accuracy") else means.idxmin()
    if pd.isna(best):
        return None
    arm = str(convolutional.loc[best, "stage"])
    return arm, report.models[arm]


def _filters_figure(report: StudyReport, data: datasets.Dataset, weights: np.ndarray, where: str, files: FigureFiles,
                    plt) -> Path:
    """Each filter (out × in × k × k) as a k×k picture: one input channel in red (+) and blue (−) on one scale for
    all, three as colour around mid grey (each filter scaled to its own largest weight)."""
    count, channels, k, _ = weights.shape
    columns = min(count, 8)
    rows = -(-count // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(1.1 * columns + 0.6, 1.1 * rows + 0.9), squeeze=False)
    bound = float(np.abs(weights).max()) or 1.0
    for axes in grid.flat:
        axes.axis("off")
    for index, axes in zip(range(count), grid.flat):
        kernel = weights[index]
        if channels == 3:
            axes.imshow(0.5 + kernel.transpose(1, 2, 0) / (2 * (float(np.abs(kernel).max()) or 1.0)))
        else:  # one channel (more: their mean, as the input's channels are summed)
            axes.imshow(kernel.mean(axis=0), cmap="RdBu_r", vmin=-bound, vmax=bound)
        axes.set_title(str(index), fontsize=7)
    colours = "red +, blue −" if channels != 3 else "colour around grey 0"
    figure.suptitle(f"{report.name}: first conv layer's {count} filters ({k}×{k}, {colours})\nof {where}",
                    fontsize=9)
    return saved(figure, files.path("filters"), plt)


def _block_starts(net) -> list[int]:
    """Where each block of a built network begins: a CNN's every conv; a resnet's stem conv and each stage."""
    from torch import nn

    from ablate.models import Stage

    return [i for i, m in enumerate(net) if isinstance(m, (nn.Conv2d, Stage))]


def block_labels(net) -> list[str]:
    """The activation figure's column titles: 'block 1', 'block 2', ... for a CNN; 'stem', 'stage 1', ... for a
    resnet."""
    from ablate.models import Stage

    starts = [net[i] for i in _block_starts(net)]
    if any(isinstance(m, Stage) for m in starts):
        return ["stem", *(f"stage {i}" for i in range(1, len(starts)))]
    return [f"block {i}" for i in range(1, len(starts) + 1)]


def block_outputs(net, images) -> list:
    """The output of each conv block of a built CNN (conv, its batch norm, activation, dropout and pooling: up to the
    next conv, or to the head's global pooling or flattening) or resnet (its stem; each stage, with a pre-activation
    network's last norm and ReLU after the last), for `images` already normalised."""
    from torch import nn

    modules = list(net)
    starts = _block_starts(net)
    head = next((i for i, m in enumerate(modules) if isinstance(m, (nn.Flatten, nn.AdaptiveAvgPool2d))), len(modules))
    ends = {min(end, head) - 1 for end in [*starts[1:], len(modules)]}
    outputs, x = [], images
    for index, module in enumerate(modules[:head]):
        x = module(x)
        if index in ends:
            outputs.append(x)
    return outputs


def _activations_figure(report: StudyReport, data: datasets.Dataset, model, arrays: dict, where: str,
                        files: FigureFiles, plt) -> Path:
    """A row per test image (the first of each of a few classes): the image, then each conv block's output as the
    mean over its channels (after activation: where the block responds), at the block's own resolution; a block
    down to one pixel as a strip of its channels' values (the last of a GAP head: the class scores)."""
    import torch

    labels = arrays["test_labels"].astype(int)
    chosen = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)[:ACTIVATION_IMAGES]]
    images = torch.from_numpy(arrays["test_images"][chosen])
    with torch.inference_mode():
        blocks = block_outputs(model.net, (images.float() - model.mean) / model.std)
        titles = block_labels(model.net)
        predicted = model(images).argmax(1).tolist()
    columns = 1 + len(blocks)
    figure, grid = plt.subplots(len(chosen), columns, figsize=(1.25 * columns + 0.4, 1.35 * len(chosen) + 0.8),
                                squeeze=False)
    names = data.class_names
    for row, (axes_row, index) in enumerate(zip(grid, chosen)):
        show(axes_row[0], arrays["test_images"][index])
        axes_row[0].set_ylabel(f"{names[labels[index]]} → {names[predicted[row]]}", fontsize=7)
        for b, (axes, output) in enumerate(zip(axes_row[1:], blocks), 1):
            channels, height, width = output.shape[1:]
            if height * width == 1:  # one pixel: its channels as a strip (a channel mean would be one flat colour)
                axes.imshow(output[row].flatten()[None, :].numpy(), cmap="magma", aspect="auto")
            else:
                axes.imshow(output[row].mean(dim=0).numpy(), cmap="magma")
            if row == 0:
                shape = f"{channels} channels, 1×1" if height * width == 1 else f"{channels}×{height}×{width}"
                axes.set_title(f"{titles[b - 1]}\n{shape}", fontsize=7)
        for axes in axes_row:
            axes.set_xticks([])
            axes.set_yticks([])
    grid[0][0].set_title("test image", fontsize=7)
    figure.suptitle(f"{report.name}: conv block outputs, mean over channels (bright: strong response; 1×1 blocks: "
                    f"each channel)\nof {where}; row label: true → predicted", fontsize=9)
    return saved(figure, files.path("activations"), plt)
