"""A dataset resident on the training device: uint8 images, split as the study says, normalised per batch.

Images stay uint8 (a quarter of the memory of float32) and are normalised per batch; the
train/validation split is seeded and shared by every trial, so arms compare on the same
examples. Each process loads a dataset once and reuses it for all its trials.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ablate.datasets._fingerprint import data_fingerprint
from ablate.datasets._registry import get, read_arrays, train_stats

if TYPE_CHECKING:
    from ablate.datasets._settings import DataSettings


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
    # 255 × the per-channel mean and std (0 and 1 for `unit`): a (C, 1, 1) float32 tensor on the device, or a number
    # for one channel — the scalar kernel single-channel results were always computed with (on CUDA it multiplies by
    # the reciprocal, one ulp away from a division by a tensor in some pixels).
    mean: torch.Tensor | float
    std: torch.Tensor | float
    fingerprint: str = ""  # the whole dataset's (ablate.datasets' _fingerprint), whatever the split

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch → float32 with the dataset's per-channel mean and std, computed on the device."""
        return (images.float() - self.mean) / self.std


_CACHE: dict[tuple, DeviceData] = {}


def load(dataset: str, settings: DataSettings, data_dir: Path, device: torch.device) -> DeviceData:
    """The dataset split as the settings say, on the device; cached for the life of the process."""
    key = (dataset, settings, str(Path(data_dir).resolve()), str(device))
    if key not in _CACHE:
        _CACHE[key] = build(dataset, settings, Path(data_dir), device)
    return _CACHE[key]


def build(dataset: str, settings: DataSettings, data_dir: Path, device: torch.device) -> DeviceData:
    """The dataset split as the settings say, on the device, without the cache."""
    arrays = read_arrays(dataset, data_dir)
    images = torch.from_numpy(arrays["train_images"].copy())  # read-only file buffers: torch wants its own
    labels = torch.from_numpy(arrays["train_labels"])
    generator = torch.Generator().manual_seed(settings.split_seed)
    order = torch.randperm(len(labels), generator=generator)
    val_idx, train_idx = order[: settings.val_size], order[settings.val_size :]
    if settings.train_limit is not None:
        train_idx = train_idx[: settings.train_limit]
    test_images = torch.from_numpy(arrays["test_images"].copy())
    test_labels = torch.from_numpy(arrays["test_labels"])
    if settings.test_limit is not None:
        test_images, test_labels = test_images[: settings.test_limit], test_labels[: settings.test_limit]

    def split(x: torch.Tensor, y: torch.Tensor) -> Split:
        return Split(images=x.contiguous().to(device), labels=y.contiguous().to(device))

    mean, std = train_stats(dataset, data_dir, arrays)
    standard = settings.normalize == "standard"  # `unit` is the same formula with mean 0 and std 1: x / 255
    scale = 255.0 if arrays["train_images"].dtype == np.uint8 else 1.0  # float images are normalised as they are

    def per_channel(values: tuple[float, ...], unit: float) -> torch.Tensor | float:
        scaled = [scale * (v if standard else unit) for v in values]  # in double precision, as a scalar would be
        if len(scaled) == 1:
            return scaled[0]
        return torch.tensor(scaled, dtype=torch.float32, device=device).view(-1, 1, 1)

    return DeviceData(
        train=split(images[train_idx], labels[train_idx]),
        val=split(images[val_idx], labels[val_idx]),
        test=split(test_images, test_labels),
        mean=per_channel(mean, 0.0),
        std=per_channel(tuple(s or 1.0 for s in std), 1.0),  # a constant channel: centred, never divided by 0
        fingerprint=data_fingerprint(dataset, arrays, get(dataset).class_names),
    )
