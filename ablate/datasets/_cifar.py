"""CIFAR-10 and CIFAR-100: 32×32 colour images in pickled batches, in the folders torchvision extracts them to.

`cifar-10-batches-py/` (data_batch_1 … 5, test_batch) and `cifar-100-python/` (train, test; the
100 fine labels) under the data folder. The batches are Python pickles, which can run code when
loaded: they are read with an unpickler that builds numpy arrays, lists and dicts and nothing
else, so a tampered file is refused instead of executed.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ablate.datasets._dataset import Dataset, register

if TYPE_CHECKING:
    import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle
caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish
forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale
willow_tree wolf woman worm
""".split())

_ALLOWED = {  # what a CIFAR batch is made of: numpy arrays (numpy 1.x and 2.x spell the module differently)
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 3 writes byte strings at pickle protocol 2; it only encodes text
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it asks to build {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch → images (N, 3, 32, 32) uint8 and labels; a damaged file is an error naming it."""
    import numpy as np

    from ablate.datasets._idx import damaged

    try:
        with open(path, "rb") as file:
            entry = _ArraysOnly(file, encoding="latin1").load()  # written by Python 2: byte strings are latin-1
        images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise damaged(path, f"{type(exc).__name__}: {exc}") from exc
    return images, labels


def _reader(train: tuple[str, ...], test: str, label_key: str) -> Callable[[Path], dict]:
    def read(folder: Path) -> dict[str, np.ndarray]:
        import numpy as np

        batches = [read_batch(folder / name, label_key) for name in train]
        test_images, test_labels = read_batch(folder / test, label_key)
        return {"train_images": np.concatenate([images for images, _ in batches]),
                "train_labels": np.concatenate([labels for _, labels in batches]),
                "test_images": test_images, "test_labels": test_labels}

    return read


def _downloader(torchvision_class: str) -> Callable[[Path], None]:
    def download(root: Path) -> None:
        import torchvision.datasets

        getattr(torchvision.datasets, torchvision_class)(root=str(root), train=True, download=True)

    return download


CIFAR10_TRAIN = tuple(f"data_batch_{k}" for k in range(1, 6))
CIFAR10 = register(Dataset(
    name="cifar10", title="CIFAR-10", folder="cifar-10-batches-py", files=(*CIFAR10_TRAIN, "test_batch"),
    shape=(3, 32, 32), class_names=CIFAR10_CLASSES, train_size=50_000, test_size=10_000,
    read=_reader(CIFAR10_TRAIN, "test_batch", "labels"), download=_downloader("CIFAR10"),
))
CIFAR100 = register(Dataset(
    name="cifar100", title="CIFAR-100", folder="cifar-100-python", files=("train", "test"),
    shape=(3, 32, 32), class_names=CIFAR100_CLASSES, train_size=50_000, test_size=10_000,
    read=_reader(("train",), "test", "fine_labels"), download=_downloader("CIFAR100"),
))
