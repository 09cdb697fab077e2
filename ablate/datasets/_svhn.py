"""SVHN: 32×32 colour crops of house numbers, in MATLAB files under SVHN/.

torchvision's `SVHN` class keeps its files directly in the `root` it is given; ablate looks in
`SVHN/` under the data folder and downloads with `SVHN(root="<data folder>/SVHN")`, so a folder
filled that way works untouched. The files' label 10 stands for the digit 0 (torchvision maps
it to 0 too); the `extra` split (531k easier images) is not used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ablate.datasets._dataset import Dataset, register

if TYPE_CHECKING:
    import numpy as np

FILES = ("train_32x32.mat", "test_32x32.mat")


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X (32, 32, 3, N) → (N, 3, 32, 32) uint8 as torchvision transposes it; y (N, 1) with 10 → 0."""
    import numpy as np
    import scipy.io

    from ablate.datasets._idx import damaged

    try:
        loaded = scipy.io.loadmat(str(path))
        images = np.ascontiguousarray(np.transpose(loaded["X"], (3, 2, 0, 1)).astype(np.uint8, copy=False))
        labels = loaded["y"].astype(np.int64).reshape(-1)
    except Exception as exc:  # scipy raises many kinds (ValueError, TypeError, zlib.error, OSError…) for one meaning
        raise damaged(path, f"{type(exc).__name__}: {exc}") from exc
    labels[labels == 10] = 0
    return images, labels


def _read(folder: Path) -> dict[str, np.ndarray]:
    (train_images, train_labels), (test_images, test_labels) = (read_mat(folder / name) for name in FILES)
    return {"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
            "test_labels": test_labels}


def _download(root: Path) -> None:
    from torchvision.datasets import SVHN as Torchvision

    for split in ("train", "test"):
        Torchvision(root=str(Path(root) / "SVHN"), split=split, download=True)


SVHN = register(Dataset(
    name="svhn", title="SVHN", folder="SVHN", files=FILES, shape=(3, 32, 32),
    class_names=tuple(str(digit) for digit in range(10)), train_size=73_257, test_size=26_032,
    read=_read, download=_download,
))
