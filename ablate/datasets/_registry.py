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

    from ablate.spec import DataSettings

DEFAULT = "mnist"  # the dataset of a study that names none
FACTORY_PREFIX = "factory:"  # the name of a dataset a factory returned starts so (see _factory)
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
    pixel_bytes: int = 1  # per stored pixel value: uint8 images; a factory's float images are kept as float32 (4)
    gzipped: bool = False  # its files are downloaded gzipped (the IDX family): an error names them so

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def resident_bytes(self, data: "DataSettings") -> int:
        """What one worker holds on its device for these data settings: the split's images, as stored, and labels."""
        train = self.train_size - data.val_size
        if data.train_limit is not None:
            train = min(train, data.train_limit)
        test = self.test_size if data.test_limit is None else min(self.test_size, data.test_limit)
        return (train + data.val_size + test) * (self.inputs * self.pixel_bytes + 8)  # int64 labels

    @property
    def inputs(self) -> int:
        """Numbers per image (C·H·W): the width of a flattened image."""
        channels, height, width = self.shape
        return channels * height * width


_DATASETS: dict[str, Dataset] = {}


def register(dataset: Dataset) -> Dataset:
    _DATASETS[dataset.name] = dataset
    return dataset


# Datasets this process trains on from arrays it was given, not from files (see `provide`).
_PROVIDED: dict[str, tuple[dict[str, "np.ndarray"], tuple[tuple[float, ...], tuple[float, ...]]]] = {}


def provide(dataset: Dataset, arrays: dict[str, "np.ndarray"],
            stats: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    """This process reads `dataset` from these arrays (as read_arrays returned them) and takes these training
    statistics (train_stats'), not its files: a worker on another node of a cluster gets the data from the driver,
    through the cluster's object store, and needs no data folder nor the factory's module."""
    _DATASETS.setdefault(dataset.name, dataset)
    _PROVIDED[dataset.name] = (arrays, stats)


def unregister(name: str) -> None:
    """Remove a dataset from the registry (one a plugin or a test registered for a while)."""
    _DATASETS.pop(name, None)


def is_factory_key(name: str) -> bool:
    return name.startswith(FACTORY_PREFIX)


def names() -> tuple[str, ...]:
    """The built-in and registered datasets a study may name (a factory's dataset is named by its table instead)."""
    return tuple(name for name in _DATASETS if not is_factory_key(name))


class ForeignFactory(AblateError):
    """A dataset factory key read from a store names a factory that is not the researcher's own code: not called."""

    def __init__(self, factory: str, reason: str):
        self.factory, self.reason = factory, reason
        super().__init__(f"the store names the dataset factory {factory} ({reason}); ablate calls a factory named by "
                         "a store only when it is your own code (a module outside Python's and installed packages' "
                         "folders, e.g. beside the study)")


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


def default_data_dir() -> Path:
    return Path(os.environ.get("ABLATE_DATA_DIR", "data"))


def find(folder: Path, name: str) -> Path | None:
    """A dataset file as it lies on disk: gzipped (as downloaded) or not (as torchvision extracts it)."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.exists():
            return candidate
    return None


def ensure_files(name: str, root: Path, download: bool = True) -> None:
    """Download the dataset's files if they are missing (`download`), or stop with a clear error — before any run is
    recorded, and leaving no empty folders behind."""
    dataset = get(name)
    folder = Path(root).resolve() / dataset.folder
    if all(find(folder, file) is not None for file in dataset.files):
        return
    if not download:
        raise AblateError(f"{dataset.title} is not in {folder}")
    missing_folders = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        dataset.download(Path(root))
    except Exception as exc:  # no network, a proxy, a mirror down: all mean the same to the user
        _remove_empty(missing_folders)
        listed = ", ".join(f"{file}.gz" if dataset.gzipped else file for file in dataset.files)
        raise AblateError(
            f"{dataset.title} is not in {folder} and could not be downloaded ({type(exc).__name__}: {_one_line(exc)}). "
            f"Put its files {listed} there, or point --data-dir / ABLATE_DATA_DIR at a folder that holds "
            f"{dataset.folder}/."
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


def train_stats(name: str, root: Path, arrays: dict[str, "np.ndarray"]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the dataset's training images (scaled to [0, 1] when uint8), computed once and
    cached beside its files; `arrays` are the dataset's, as read_arrays returned them."""
    from ablate.datasets._stats import cached_stats

    if name in _PROVIDED:
        return _PROVIDED[name][1]
    dataset = get(name)
    folder = Path(root).resolve() / dataset.folder
    files = [found for file in dataset.files if (found := find(folder, file)) is not None]
    return cached_stats(f"{name}@{folder}", arrays["train_images"], files)


def read_arrays(name: str, root: Path, download: bool = True) -> dict[str, "np.ndarray"]:
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
