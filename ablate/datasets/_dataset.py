"""The registry proper: dataset name → everything ablate knows of it (`Dataset`), without loading it.

The bottom of the package: the readers (_mnist, _cifar, _svhn) and factories (_factory) register here, and
_registry's lookups (`get`: a factory's dataset rebuilt from its key) sit above both, so no module imports back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ablate.errors import AblateError

if TYPE_CHECKING:
    import numpy as np

    from ablate.datasets._settings import DataSettings

DEFAULT = "mnist"  # the dataset of a study that names none
FACTORY_PREFIX = "factory:"  # the name of a dataset a factory returned starts so (see _factory)
ROLES = ("train_images", "train_labels", "test_images", "test_labels")  # what a reader returns


@dataclass(frozen=True)
class Dataset:
    """An image-classification dataset: its files, how to read them, its shape and classes.

    `read` gets the folder that holds the files and returns uint8 images, (N, C, H, W) or (N, H, W)
    for one channel, and integer labels under the names in ROLES; `download` fetches the files
    into the data folder (through torchvision, in its layout) or raises (None: a dataset nobody
    can download). Validation, parameter counts and `ablate plan` need only the numbers, so
    nothing here imports numpy or torch.
    """

    name: str
    title: str  # as people write it, e.g. "MNIST"
    folder: str  # under the data folder, in torchvision's layout, e.g. "MNIST/raw"
    files: tuple[str, ...]  # the files `read` needs, as named on disk (a file may also lie there gzipped)
    shape: tuple[int, int, int]  # (channels, height, width) of one image
    class_names: tuple[str, ...]
    train_size: int
    test_size: int
    read: Callable[[Path], dict[str, np.ndarray]]
    download: Callable[[Path], None] | None = None  # None: ablate cannot fetch its files; the user puts them there
    pixel_bytes: int = 1  # per stored pixel value: uint8 images; a factory's float images are kept as float32 (4)
    gzipped: bool = False  # its files are downloaded gzipped (the IDX family): an error names them so

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def split_sizes(self, data: DataSettings) -> tuple[int, int, int]:
        """The training, validation and test examples a trial uses under these data settings, from the known sizes
        alone: validation split off the training set first, then train_limit and test_limit (as _resident's `build`
        splits them)."""
        train = self.train_size - data.val_size
        if data.train_limit is not None:
            train = min(train, data.train_limit)
        test = self.test_size if data.test_limit is None else min(self.test_size, data.test_limit)
        return train, data.val_size, test

    def resident_bytes(self, data: DataSettings) -> int:
        """What one worker holds on its device for these data settings: the split's images, as stored, and labels."""
        return sum(self.split_sizes(data)) * (self.inputs * self.pixel_bytes + 8)  # int64 labels

    def listed_files(self, names: tuple[str, ...] | None = None) -> str:
        """Its files (or `names` of them) as a message names them: as downloaded (gzipped, for the IDX family)."""
        return ", ".join(f"{file}.gz" if self.gzipped else file for file in (self.files if names is None else names))

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
_PROVIDED: dict[str, tuple[dict[str, np.ndarray], tuple[tuple[float, ...], tuple[float, ...]]]] = {}


def provide(dataset: Dataset, arrays: dict[str, np.ndarray],
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


def find(folder: Path, name: str) -> Path | None:
    """A dataset file as it lies on disk: gzipped (as downloaded) or not (as torchvision extracts it)."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.exists():
            return candidate
    return None
