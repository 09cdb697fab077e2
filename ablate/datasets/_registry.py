"""The registry: dataset name → everything ablate knows of it, without loading it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ablate.errors import AblateError

if TYPE_CHECKING:
    import numpy as np

DEFAULT = "mnist"  # the dataset of a study that names none
ROLES = ("train_images", "train_labels", "test_images", "test_labels")  # what a reader returns


@dataclass(frozen=True)
class Dataset:
    """An image-classification dataset: its files, how to read them, its shape and classes.

    `read` gets the folder that holds the files and returns uint8 images, (N, C, H, W) or (N, H, W)
    for one channel, and integer labels under the names in ROLES; `download` fetches the files
    into the data folder (through torchvision, in its layout) or raises. Validation, parameter
    counts and `ablate plan` need only the numbers, so nothing here imports numpy or torch.
    """

    name: str
    title: str  # as people write it, e.g. "MNIST"
    folder: str  # under the data folder, in torchvision's layout, e.g. "MNIST/raw"
    files: tuple[str, ...]  # the files `read` needs, as named on disk (a file may also lie there gzipped)
    shape: tuple[int, int, int]  # (channels, height, width) of one image
    class_names: tuple[str, ...]
    train_size: int
    test_size: int
    read: Callable[[Path], dict[str, "np.ndarray"]]
    download: Callable[[Path], None]

    @property
    def classes(self) -> int:
        return len(self.class_names)

    @property
    def inputs(self) -> int:
        """Numbers per image (C·H·W): the width of a flattened image."""
        channels, height, width = self.shape
        return channels * height * width


_DATASETS: dict[str, Dataset] = {}


def register(dataset: Dataset) -> Dataset:
    _DATASETS[dataset.name] = dataset
    return dataset


def unregister(name: str) -> None:
    """Remove a dataset from the registry (one a plugin or a test registered for a while)."""
    _DATASETS.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_DATASETS)


def get(name: str) -> Dataset:
    """The registered dataset; the study file's `dataset` is validated against names(), so a miss is a bug."""
    try:
        return _DATASETS[name]
    except KeyError:
        raise AblateError(f"no dataset named {name!r}; known: {', '.join(_DATASETS)}") from None


def default_data_dir() -> Path:
    return Path(os.environ.get("ABLATE_DATA_DIR", "data"))


def find(folder: Path, name: str) -> Path | None:
    """A dataset file as it lies on disk: gzipped (as downloaded) or not (as torchvision extracts it)."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.exists():
            return candidate
    return None


def ensure_files(name: str, root: Path) -> None:
    """Download the dataset's files if they are missing, or stop with a clear error — before any run is recorded,
    and leaving no empty folders behind."""
    dataset = get(name)
    folder = Path(root).resolve() / dataset.folder
    if all(find(folder, file) is not None for file in dataset.files):
        return
    missing_folders = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        dataset.download(Path(root))
    except Exception as exc:  # no network, a proxy, a mirror down: all mean the same to the user
        _remove_empty(missing_folders)
        listed = ", ".join(f"{file}.gz" for file in dataset.files)
        raise AblateError(
            f"{dataset.title} is not in {folder} and could not be downloaded ({type(exc).__name__}: {exc}). "
            f"Put its files {listed} there, or point --data-dir / ABLATE_DATA_DIR at a folder that holds "
            f"{dataset.folder}/."
        ) from exc


def _remove_empty(folders: list[Path]) -> None:
    """The folders a failed download created, deepest first, where it left them empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty, or not there
            pass


def check_data(name: str, root: Path) -> None:
    """Read the dataset once and check it, so that a missing, truncated or damaged file is one error naming the
    file, found before anything is recorded — not one failed run per trial."""
    import numpy as np

    dataset = get(name)
    arrays = read_arrays(name, root)
    folder = Path(root).resolve() / dataset.folder
    for split, size in (("train", dataset.train_size), ("test", dataset.test_size)):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        problem = None
        if images.shape[1:] != dataset.shape:
            problem = f"images of shape {images.shape[1:]}, not {dataset.shape}"
        elif len(images) != len(labels) or len(images) != size:
            problem = f"{len(images):,} images and {len(labels):,} labels, not {size:,} of each"
        elif labels.size and not 0 <= int(np.min(labels)) <= int(np.max(labels)) < dataset.classes:
            problem = f"labels outside 0…{dataset.classes - 1}"
        if problem:
            raise AblateError(f"{dataset.title}'s {split} files in {folder} hold {problem}: replace them with the "
                              "original files")


def train_stats(name: str, root: Path, arrays: dict[str, "np.ndarray"]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the dataset's training images (scaled to [0, 1] when uint8), computed once and
    cached beside its files; `arrays` are the dataset's, as read_arrays returned them."""
    from ablate.datasets._stats import cached_stats

    dataset = get(name)
    folder = Path(root).resolve() / dataset.folder
    files = [found for file in dataset.files if (found := find(folder, file)) is not None]
    return cached_stats(f"{name}@{folder}", arrays["train_images"], files)


def read_arrays(name: str, root: Path) -> dict[str, "np.ndarray"]:
    """The dataset's train and test arrays as numpy: images uint8 (N, C, H, W), labels int64 (N,)."""
    import numpy as np

    dataset = get(name)
    ensure_files(name, root)
    arrays = dataset.read(Path(root) / dataset.folder)
    for role in ("train_images", "test_images"):
        images = arrays[role]
        arrays[role] = images[:, np.newaxis] if images.ndim == 3 else images  # one channel, stored without its axis
    for role in ("train_labels", "test_labels"):
        arrays[role] = arrays[role].astype(np.int64)
    return arrays
