"""Datasets as tensors resident on the training device.

Images stay uint8 (a quarter of the memory of float32) and are normalised per batch;
the train/validation split is seeded and shared by every trial, so arms compare on the
same examples. Each process loads a dataset once and reuses it for all its trials.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ablate.errors import AblateError
from ablate.spec import DataSettings

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the 60k training images, the usual constants


def default_data_dir() -> Path:
    return Path(os.environ.get("ABLATE_DATA_DIR", "data"))


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W), on the device
    labels: torch.Tensor  # int64, (N,), on the device

    def __len__(self) -> int:
        return self.labels.shape[0]


@dataclass
class DeviceData:
    train: Split
    val: Split
    test: Split
    mean: float
    std: float

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch → float32 with the dataset's mean and std, computed on the device."""
        return (images.float() - 255.0 * self.mean) / (255.0 * self.std)


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(raw_dir: Path, stem: str) -> Path | None:
    for candidate in (raw_dir / f"{stem}.gz", raw_dir / stem):
        if candidate.exists():
            return candidate
    return None


def _download_mnist(root: Path) -> None:
    """Let torchvision fetch the files when the network allows; a clear error when it does not."""
    try:
        from torchvision.datasets import MNIST

        for train in (True, False):
            MNIST(root=str(root), train=train, download=True)
    except Exception as exc:  # no network, a proxy, a mirror down: all mean the same to the user
        files = ", ".join(f"{stem}.gz" for stem in MNIST_FILES.values())
        raise AblateError(
            f"MNIST is not in {root / 'MNIST' / 'raw'} and could not be downloaded ({type(exc).__name__}: {exc}). "
            f"Put the four files {files} there, or point --data-dir / ABLATE_DATA_DIR at a folder that holds MNIST/raw/."
        ) from exc


def ensure_files(dataset: str, root: Path) -> None:
    """Download the dataset's files if they are missing, or stop with a clear error — before any run is recorded."""
    if dataset != "mnist":
        raise AblateError(f"no loader for dataset {dataset!r}")
    raw_dir = Path(root) / "MNIST" / "raw"
    if any(_find(raw_dir, stem) is None for stem in MNIST_FILES.values()):
        _download_mnist(Path(root))


def load_mnist_arrays(root: Path) -> dict[str, np.ndarray]:
    raw_dir = root / "MNIST" / "raw"
    ensure_files("mnist", root)
    return {key: _read_idx(_find(raw_dir, stem)) for key, stem in MNIST_FILES.items()}


_CACHE: dict[tuple, DeviceData] = {}


def load(dataset: str, settings: DataSettings, data_dir: Path, device: torch.device) -> DeviceData:
    """The dataset split as the settings say, on the device; cached for the life of the process."""
    key = (dataset, settings, str(Path(data_dir).resolve()), str(device))
    if key not in _CACHE:
        _CACHE[key] = _build(dataset, settings, Path(data_dir), device)
    return _CACHE[key]


def _build(dataset: str, settings: DataSettings, data_dir: Path, device: torch.device) -> DeviceData:
    if dataset != "mnist":  # the spec admits only known datasets; this guards new ones wired half-way
        raise AblateError(f"no loader for dataset {dataset!r}")
    arrays = load_mnist_arrays(data_dir)
    images = torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1)
    labels = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    generator = torch.Generator().manual_seed(settings.split_seed)
    order = torch.randperm(len(labels), generator=generator)
    val_idx, train_idx = order[: settings.val_size], order[settings.val_size :]
    if settings.train_limit is not None:
        train_idx = train_idx[: settings.train_limit]
    test_images = torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1)
    test_labels = torch.from_numpy(arrays["test_labels"].astype(np.int64))
    if settings.test_limit is not None:
        test_images, test_labels = test_images[: settings.test_limit], test_labels[: settings.test_limit]

    def split(x: torch.Tensor, y: torch.Tensor) -> Split:
        return Split(images=x.contiguous().to(device), labels=y.contiguous().to(device))

    return DeviceData(
        train=split(images[train_idx], labels[train_idx]),
        val=split(images[val_idx], labels[val_idx]),
        test=split(test_images, test_labels),
        # `unit` scaling is the same formula with mean 0 and std 1: x / 255.
        mean=MNIST_MEAN if settings.normalize == "standard" else 0.0,
        std=MNIST_STD if settings.normalize == "standard" else 1.0,
    )
