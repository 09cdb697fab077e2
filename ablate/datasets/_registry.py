"""Lookups over the registry (ablate.datasets' _dataset): a dataset by name — a factory's rebuilt from its key —,
the data folder, its files found (`data_files`, without reading them), downloaded and checked, its arrays read and
its training statistics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ablate.datasets._dataset import _DATASETS, _PROVIDED, Dataset, find, is_factory_key, names
from ablate.errors import AblateError

if TYPE_CHECKING:
    import numpy as np


def get(name: str, *, from_store: bool = False) -> Dataset:
    """The registered dataset, or a factory's rebuilt from its key; the study file's `dataset` is validated against
    names(), so a miss is a bug. `from_store`: the name was read from a store (anyone who can write to it chose it),
    so a factory key's factory is called only when it is the researcher's own code, else ForeignFactory; a trial's
    own settings (from the user's study) pass no flag."""
    if name in _DATASETS:
        return _DATASETS[name]
    if is_factory_key(name):  # a dataset of the user's factory, in a process that has not called it yet
        from ablate.datasets._factory import from_key

        return from_key(name, from_store=from_store)
    raise AblateError(f"no dataset named {name!r}; known: {', '.join(names())}")


DATA_DIR_ENV = "ABLATE_DATA_DIR"  # the data folder when no --data-dir is given


def data_folder(flag: str | Path | None = None) -> Path:
    """The data folder, decided here for every command: --data-dir (`flag`), else $ABLATE_DATA_DIR, else ./data."""
    return Path(flag) if flag else Path(os.environ.get(DATA_DIR_ENV, "data"))


@dataclass(frozen=True)
class DataFiles:
    """Where a dataset's files stand, found without reading them: `present`, `download` (some are missing and a run
    fetches them), `missing` (some are missing and ablate cannot fetch them: the user puts them in `folder`), or
    `factory` (no files: a factory function makes the data)."""

    state: str
    folder: Path
    missing: tuple[str, ...] = ()  # as named on disk (a file may also lie there gzipped)


def data_files(name: str, root: Path) -> DataFiles:
    dataset = get(name)
    folder = Path(root).resolve() / dataset.folder
    if is_factory_key(name):
        return DataFiles("factory", folder)
    missing = tuple(file for file in dataset.files if find(folder, file) is None)
    if not missing:
        return DataFiles("present", folder)
    return DataFiles("download" if dataset.download is not None else "missing", folder, missing)


def ensure_files(name: str, root: Path, download: bool = True) -> None:
    """Download the dataset's files if they are missing (`download`), or stop with a clear error — before any run is
    recorded, and leaving no empty folders behind."""
    dataset = get(name)
    files = data_files(name, root)
    folder = files.folder
    if not files.missing:
        return
    if not download:
        raise AblateError(f"{dataset.title} is not in {folder}")
    elsewhere = f"or point --data-dir / ABLATE_DATA_DIR at a folder that holds {dataset.folder}/."
    if dataset.download is None:
        raise AblateError(f"{dataset.title} is not in {folder}, and ablate cannot download it. Put its files "
                          f"{dataset.listed_files(files.missing)} there, {elsewhere}")
    missing_folders = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        dataset.download(Path(root))
    except Exception as exc:  # no network, a proxy, a mirror down: all mean the same to the user
        _remove_empty(missing_folders)
        raise AblateError(
            f"{dataset.title} is not in {folder} and could not be downloaded ({type(exc).__name__}: {_one_line(exc)}). "
            f"Put its files {dataset.listed_files()} there, {elsewhere}"
        ) from exc


def _one_line(exc: Exception) -> str:
    """torchvision's download errors span lines (the mirror tried, then the reason): one line, one message."""
    return " ".join(str(exc).split())


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


def train_stats(name: str, root: Path, arrays: dict[str, np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the dataset's training images (scaled to [0, 1] when uint8), computed once and
    cached beside its files; `arrays` are the dataset's, as read_arrays returned them."""
    from ablate.datasets._stats import cached_stats

    if name in _PROVIDED:
        return _PROVIDED[name][1]
    dataset = get(name)
    folder = Path(root).resolve() / dataset.folder
    files = [found for file in dataset.files if (found := find(folder, file)) is not None]
    return cached_stats(f"{name}@{folder}", arrays["train_images"], files)


def read_arrays(name: str, root: Path, download: bool = True) -> dict[str, np.ndarray]:
    """The dataset's train and test arrays as numpy: images uint8 (N, C, H, W), labels int64 (N,); missing files are
    downloaded first unless `download` is false (then they are an AblateError)."""
    import numpy as np

    if name in _PROVIDED:
        return dict(_PROVIDED[name][0])
    dataset = get(name)
    ensure_files(name, root, download)
    arrays = dataset.read(Path(root) / dataset.folder)
    for role in ("train_images", "test_images"):
        images = arrays[role]
        arrays[role] = images[:, np.newaxis] if images.ndim == 3 else images  # one channel, stored without its axis
    for role in ("train_labels", "test_labels"):
        arrays[role] = arrays[role].astype(np.int64)
    return arrays
