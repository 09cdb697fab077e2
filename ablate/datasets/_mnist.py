"""The MNIST family: MNIST, Fashion-MNIST, KMNIST and three EMNIST splits — 28×28 grey images in IDX files.

Each lies where torchvision's own class keeps it, `<Class>/raw/` under the data folder, gzipped
(as downloaded) or not (as torchvision extracts it), so a folder a user filled with torchvision
works untouched; a missing one is fetched through that class when the network allows.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ablate.datasets._dataset import ROLES, Dataset, find, register

if TYPE_CHECKING:
    import numpy as np

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _reader(files: tuple[str, ...], upright: bool = False, first_label: int = 0) -> Callable[[Path], dict]:
    """Read the four IDX files (in ROLES' order). EMNIST stores each image transposed (column by column): `upright`
    turns it back, so that figures show letters as people write them. `first_label` is the number the files give
    the first class (EMNIST letters count from 1): ablate's classes always count from 0."""

    def read(folder: Path) -> dict[str, np.ndarray]:
        import numpy as np

        from ablate.datasets._idx import read_idx

        arrays = {role: read_idx(find(folder, file)) for role, file in zip(ROLES, files)}
        for role in ("train_images", "test_images"):
            if upright:
                arrays[role] = np.ascontiguousarray(arrays[role].transpose(0, 2, 1))
        for role in ("train_labels", "test_labels"):
            arrays[role] = arrays[role].astype(np.int64) - first_label
        return arrays

    return read


def _downloader(torchvision_class: str, **kwargs) -> Callable[[Path], None]:
    """Let torchvision's class fetch (and check) the files into its own layout when the network allows."""

    def download(root: Path) -> None:
        import torchvision.datasets

        for train in (True, False):
            getattr(torchvision.datasets, torchvision_class)(root=str(root), train=train, download=True, **kwargs)

    return download


def _mnist_like(name: str, title: str, torchvision_class: str, class_names: tuple[str, ...]) -> Dataset:
    return register(Dataset(
        name=name, title=title, folder=f"{torchvision_class}/raw", files=MNIST_FILES, shape=(1, 28, 28),
        class_names=class_names, train_size=60_000, test_size=10_000, read=_reader(MNIST_FILES),
        download=_downloader(torchvision_class), gzipped=True,
    ))


MNIST = _mnist_like("mnist", "MNIST", "MNIST", tuple(str(digit) for digit in range(10)))
FASHION_MNIST = _mnist_like("fashion-mnist", "Fashion-MNIST", "FashionMNIST", (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"))
KMNIST = _mnist_like("kmnist", "KMNIST", "KMNIST", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"))

# EMNIST's splits, as torchvision names their classes (balanced merges the letters whose capital and small
# forms look alike into the capital: 47 classes).
_MERGED = set("cijklmopsuvwxyz")
EMNIST_SPLITS = {
    "balanced": (tuple(sorted(set(string.digits + string.ascii_letters) - _MERGED)), 112_800, 18_800),
    "letters": (tuple(string.ascii_lowercase), 124_800, 20_800),
    "digits": (tuple(string.digits), 240_000, 40_000),
}


def emnist_files(split: str) -> tuple[str, ...]:
    return tuple(f"emnist-{split}-{part}-{kind}-ubyte" for part in ("train", "test")
                 for kind in ("images-idx3", "labels-idx1"))


for _split, (_names, _train, _test) in EMNIST_SPLITS.items():
    register(Dataset(
        name=f"emnist-{_split}", title=f"EMNIST {_split}", folder="EMNIST/raw", files=emnist_files(_split),
        shape=(1, 28, 28), class_names=_names, train_size=_train, test_size=_test,
        read=_reader(emnist_files(_split), upright=True, first_label=1 if _split == "letters" else 0),
        download=_downloader("EMNIST", split=_split), gzipped=True,
    ))
