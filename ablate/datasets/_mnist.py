"""MNIST: 70,000 handwritten digits, 28×28 grey, in IDX files under MNIST/raw/ (torchvision's layout)."""

from __future__ import annotations

from pathlib import Path

from ablate.datasets._registry import ROLES, Dataset, find, register

FILES = dict(zip(ROLES, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                         "t10k-labels-idx1-ubyte")))


def _read(folder: Path) -> dict:
    from ablate.datasets._idx import read_idx

    return {role: read_idx(find(folder, file)) for role, file in FILES.items()}


def _download(root: Path) -> None:
    """Let torchvision fetch the files when the network allows."""
    from torchvision.datasets import MNIST as Torchvision

    for train in (True, False):
        Torchvision(root=str(root), train=train, download=True)


MNIST = register(Dataset(
    name="mnist", title="MNIST", folder="MNIST/raw", files=tuple(FILES.values()),
    shape=(1, 28, 28), class_names=tuple(str(digit) for digit in range(10)), train_size=60_000, test_size=10_000,
    read=_read, download=_download,
))
