"""Drawing helpers shared by the report's figures: an image as its data's shape says, a figure written out."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
