"""Drawing helpers shared by the report's figures: where each goes and what it is called, an image as its data's shape
says, a figure written out and logged, and a figure that could not be drawn said with why."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablate.report._report import StudyReport
from ablate.tracking import Tracker

# What the list of figures not drawn calls each figure (by the end of its file name).
TITLES = {"samples": "training images", "confusion": "confusion matrix", "mistakes": "most confident mistakes",
          "predictions": "test predictions", "per-class": "accuracy per class (figure and table)",
          "templates": "class templates", "filters": "first-layer filters", "activations": "conv block outputs"}


@dataclass(frozen=True)
class FigureFiles:
    """Where a report's figures go: `folder` (the markdown's), each named `<prefix>-<figure>.png`, the prefix being
    the markdown file's stem, with the study's name after it where the report holds several studies — so that a
    report never overwrites another's figures."""

    folder: Path
    prefix: str

    def path(self, figure: str) -> Path:
        return self.folder / f"{self.prefix}-{figure}.png"

    def logged_name(self, path: Path, study: str) -> str:
        """The name a figure is logged to MLflow under: `<study>-<figure>.png`, whatever the report's file is called,
        so that a run's figures say which study they show and the latest report's replace the earlier ones."""
        return f"{study}{path.name.removeprefix(self.prefix)}"


def log_figures(tracker: Tracker, run_id: str, paths: list[Path], files: FigureFiles, study: str) -> None:
    """The figures logged to the run, in its artifact folder figures/, under their logged names."""
    with tempfile.TemporaryDirectory() as scratch:
        for path in paths:
            name = files.logged_name(path, study)
            if name != path.name:
                path = Path(shutil.copyfile(path, Path(scratch) / name))
            tracker.log_artifact(run_id, str(path), "figures")


def not_drawn(report: StudyReport, figures: tuple[str, ...], why: str) -> None:
    """These figures (TITLES' keys) of the report could not be drawn, and why: the markdown and the CLI say so."""
    report.not_drawn += [(TITLES[figure], why) for figure in figures]


def saved(figure, path: Path, plt) -> Path:
    """The figure laid out, written as a PNG at `path` and closed."""
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def picture_of(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A (C, H, W) image as imshow takes it: three channels in colour, uint8 as it is, float (a factory's) scaled to
    its own range; any other count its first channel in grey (dark ink on white)."""
    if image.shape[0] != 3:
        return image[0], "gray_r"
    picture = image.transpose(1, 2, 0)
    if picture.dtype != np.uint8:
        low, high = float(picture.min()), float(picture.max())
        picture = (picture - low) / ((high - low) or 1.0)
    return picture, None


def show(axes, image: np.ndarray) -> None:
    """One image drawn as `picture_of` says; grey uint8 on the full 0–255 range, so that a faint image looks faint."""
    picture, cmap = picture_of(image)
    span = {"vmin": 0, "vmax": 255} if cmap and picture.dtype == np.uint8 else {}
    axes.imshow(picture, cmap=cmap, **span)
