"""The training engine: one trial, data already on the device.

Batches are index slices of a per-epoch permutation drawn on the device; running loss
and accuracy accumulate in device tensors, so the host waits for the device once per
epoch (to log), never once per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ablate.data import DeviceData, Split
from ablate.models import build_model, count_params, initialise
from ablate.spec import DATASETS, TrainSettings, TrialSettings

EVAL_BATCH = 4096
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrialResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one dict of metrics per epoch
    test_loss: float = float("nan")
    test_accuracy: float = float("nan")
    params_count: int = 0
    train_seconds: float = 0.0

    def final_metrics(self) -> dict[str, float]:
        return {
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "params_count": float(self.params_count),
            "train_seconds": self.train_seconds,
        }


def make_loss(name: str, classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "cross_entropy":
        return F.cross_entropy
    if name == "mse":
        # System L's "MSE": squared error between the softmax output and the one-hot target.
        return lambda logits, y: F.mse_loss(logits.softmax(dim=1), F.one_hot(y, classes).to(logits.dtype))
    raise ValueError(f"unknown loss {name!r}")


def make_optimizer(model: nn.Module, train: TrainSettings) -> torch.optim.Optimizer:
    params = model.parameters()
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=train.lr, momentum=train.momentum, nesterov=train.nesterov, weight_decay=train.weight_decay
        )
    raise ValueError(f"unknown optimizer {train.optimizer!r}")


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, data: DeviceData, loss_fn) -> tuple[float, float]:
    """Mean loss and accuracy over a split, in large batches, with one host sync at the end."""
    model.eval()
    loss_sum = torch.zeros((), device=split.labels.device)
    correct = torch.zeros((), device=split.labels.device, dtype=torch.long)
    for start in range(0, len(split), EVAL_BATCH):
        images = data.normalise(split.images[start : start + EVAL_BATCH])
        labels = split.labels[start : start + EVAL_BATCH]
        logits = model(images)
        loss_sum += loss_fn(logits, labels) * labels.shape[0]
        correct += (logits.argmax(dim=1) == labels).sum()
    loss, hits = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()
    return loss / len(split), hits / len(split)


def _train_epoch(model, optimizer, loss_fn, data: DeviceData, batch_size: int, generator) -> tuple[float, float]:
    model.train()
    split = data.train
    device = split.labels.device
    order = torch.randperm(len(split), device=device, generator=generator)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for start in range(0, len(split), batch_size):
        index = order[start : start + batch_size]
        images, labels = data.normalise(split.images[index]), split.labels[index]
        logits = model(images)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * labels.shape[0]
        correct += (logits.detach().argmax(dim=1) == labels).sum()
    loss, hits = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()
    return loss / len(split), hits / len(split)


def train_trial(
    settings: TrialSettings, data: DeviceData, device: torch.device, on_epoch: EpochCallback | None = None
) -> TrialResult:
    """Train one trial from its seed; validate every epoch; test once at the end."""
    dataset = DATASETS[settings.dataset]
    torch.manual_seed(settings.seed)  # initial weights and dropout masks follow the trial's seed
    model = build_model(settings.model, dataset)
    initialise(model, settings.train.init)
    model = model.to(device)
    optimizer = make_optimizer(model, settings.train)
    loss_fn = make_loss(settings.train.loss, dataset.classes)
    generator = torch.Generator(device=device).manual_seed(settings.seed)  # batch order
    result = TrialResult(params_count=count_params(model))
    started = time.perf_counter()
    for epoch in range(1, settings.train.epochs + 1):
        epoch_start = time.perf_counter()
        train_loss, train_accuracy = _train_epoch(
            model, optimizer, loss_fn, data, settings.train.batch_size, generator
        )
        val_loss, val_accuracy = evaluate(model, data.val, data, loss_fn)
        metrics = {
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - epoch_start,
        }
        result.history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    result.train_seconds = time.perf_counter() - started
    result.test_loss, result.test_accuracy = evaluate(model, data.test, data, loss_fn)
    return result
