"""The training engine: one trial, data already on the device.

Batches are index slices of a per-epoch permutation drawn on the device; running loss
and accuracy accumulate in device tensors, so the host waits for the device once per
epoch (to log), never once per step.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ablate import datasets, models
from ablate._timeline import mark
from ablate.datasets import DeviceData, Split
from ablate.engine._augment import AUGMENT_SEED_OFFSET, augment_batch
from ablate.engine._graph import Diverged, EagerStep, GraphStep
from ablate.engine._layout import conv_layout, in_layout
from ablate.engine._optim import StepRates, make_loss, make_optimizer
from ablate.spec import Augment, EarlyStopping, TrialSettings

EVAL_BATCH = 4096
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrialResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one dict of metrics per epoch
    test_loss: float = float("nan")
    test_accuracy: float = float("nan")
    params_count: int = 0
    train_seconds: float = 0.0
    tested_epoch: int = 0  # the epoch whose weights were tested: the last, or the best when early stopping restored it
    stopped_early: bool = False
    predictions: np.ndarray | None = None  # test set: predicted class per image (uint8), for confusion matrices
    confidences: np.ndarray | None = None  # test set: softmax probability of the predicted class (float16)
    weights: np.ndarray | None = None  # a linear model's weight matrix (classes × C·H·W): the class templates
    # The network as a single run ends it, on the device: the tested weights (the best epoch's when early stopping
    # restored them), and the last epoch's where they differ — what the worker saves as the trial's models.
    model: nn.Module | None = None
    last_model: nn.Module | None = None
    channels_last: bool = False  # the network ran channels-last (ablate.engine's layout): so must whoever loads it

    def final_metrics(self) -> dict[str, float]:
        return {
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "params_count": float(self.params_count),
            "train_seconds": self.train_seconds,
            "epochs_run": float(len(self.history)),
            "tested_epoch": float(self.tested_epoch),
            "tested_val_accuracy": self.history[self.tested_epoch - 1]["val_accuracy"] if self.history else math.nan,
        }


@torch.inference_mode()
def evaluate(
    model: nn.Module, split: Split, data: DeviceData, loss_fn, keep: list | None = None,
    layout: torch.memory_format = torch.contiguous_format,
) -> tuple[float, float]:
    """Mean loss and accuracy over a split, in large batches (in the network's `layout`), with one host sync at the
    end. With `keep`, each batch's predicted class and its softmax confidence are appended to it (on the device).
    """
    model.eval()
    loss_sum = torch.zeros((), device=split.labels.device)
    correct = torch.zeros((), device=split.labels.device, dtype=torch.long)
    for start in range(0, len(split), EVAL_BATCH):
        images = in_layout(data.normalise(split.images[start : start + EVAL_BATCH]), layout)
        labels = split.labels[start : start + EVAL_BATCH]
        logits = model(images)
        loss_sum += loss_fn(logits, labels) * labels.shape[0]
        correct += (logits.argmax(dim=1) == labels).sum()
        if keep is not None:
            confidence, predicted = logits.float().softmax(dim=1).max(dim=1)
            keep.append((predicted, confidence))
    loss, hits = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()
    return loss / len(split), hits / len(split)


@dataclass
class _Epochs:
    """What a trial's epochs need besides the data: the step (eager or graph-safe), the rates of each step, the
    augmentation and the layout its batches are given in."""

    step: EagerStep | GraphStep
    rates: StepRates
    augment: Augment
    augment_generator: torch.Generator
    layout: torch.memory_format = torch.contiguous_format


def _train_epoch(epochs: _Epochs, data: DeviceData, batch_size: int, generator,
                 rates: tuple[list[float], list[float]]) -> tuple[float, float]:
    """One pass over the training set with the epoch's `rates` (a learning rate and a momentum per step): the
    batches gathered, augmented and normalised here, each handed to the step; one host sync, at the end."""
    epochs.step.model.train()
    split = data.train
    device = split.labels.device
    order = torch.randperm(len(split), device=device, generator=generator)
    epochs.step.start_epoch(*rates)
    for number, start in enumerate(range(0, len(split), batch_size), 1):
        index = order[start : start + batch_size]
        images, labels = split.images[index], split.labels[index]
        if epochs.augment.active:
            images = augment_batch(images.float(), epochs.augment, epochs.augment_generator)
        epochs.step(number, in_layout(data.normalise(images), epochs.layout), labels)
        if number == 1:
            mark("first step")
    loss, accuracy, bad = epochs.step.totals.read(len(split))
    if bad:
        raise Diverged("training loss is not finite")
    return loss, accuracy


class Stateful(Protocol):
    """What early stopping copies the best weights from: a model, or one trial's slice of a packed network."""

    def state_dict(self) -> dict[str, torch.Tensor]: ...


class EarlyStopper:
    """Watches a validation metric; keeps a device copy of the best weights when asked to restore them."""

    def __init__(self, rule: EarlyStopping):
        self.rule = rule
        self.best = math.inf if rule.metric == "val_loss" else -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.waited = 0

    def improved(self, value: float) -> bool:
        if self.rule.metric == "val_loss":
            return value < self.best - self.rule.min_delta
        return value > self.best + self.rule.min_delta

    def should_stop(self, epoch: int, metrics: dict[str, float], model: Stateful) -> bool:
        value = metrics[self.rule.metric]
        if self.improved(value):
            self.best, self.best_epoch, self.waited = value, epoch, 0
            if self.rule.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.waited += 1
        return self.waited >= self.rule.patience


def end_training(
    result: TrialResult, stopper: EarlyStopper | None, started: float, *, snapshot: Callable[[], nn.Module],
    restore: Callable[[dict[str, torch.Tensor]], None], network: Callable[[], nn.Module],
) -> None:
    """The end of one trial's training, single or packed (one helper, so the two cannot drift apart): its training
    time; the epoch it is tested at, the last; and, where early stopping kept the best epoch's weights, those
    restored (`restore`) and tested instead, with the last epoch's network (`snapshot`, taken before the restore)
    kept as the last model when the best epoch is not the last. The tested network (`network`, called after the
    restore) becomes the trial's model."""
    result.train_seconds = time.perf_counter() - started
    result.tested_epoch = len(result.history)
    if stopper is not None and stopper.best_state is not None:
        if stopper.best_epoch != len(result.history):
            result.last_model = snapshot()
        restore(stopper.best_state)
        result.tested_epoch = stopper.best_epoch
    result.model = network()


def train_trial(
    settings: TrialSettings, data: DeviceData, device: torch.device, on_epoch: EpochCallback | None = None,
    test: bool = True, graphs: str = "off",
) -> TrialResult:
    """Train one trial from its seed; validate every epoch; test once at the end (a search never tests). With
    `graphs = "auto"` on CUDA, the step is the graph-safe one, captured as a CUDA graph (ablate.engine's _graph)."""
    dataset = datasets.get(settings.dataset)
    train = settings.train
    torch.manual_seed(settings.seed)  # initial weights (and a GPU's dropout masks) follow the trial's seed
    model = models.build_model(settings.model, dataset)
    models.initialise(model, train.init)
    models.seed_dropout(model, settings.seed)  # the CPU's masks: the counter-based stream keyed by the seed
    layout = conv_layout(settings.model.kind, device)
    model = model.to(device, memory_format=layout)
    steps_per_epoch = math.ceil(len(data.train) / train.batch_size)
    loss_fn = make_loss(train.loss, dataset.classes, train.label_smoothing)
    if graphs == "auto" and device.type == "cuda":
        step: EagerStep | GraphStep = GraphStep(model, train, loss_fn, device, steps_per_epoch, capture=True)
    else:
        step = EagerStep(model, make_optimizer(model, train), loss_fn, train.grad_clip, device)
    epochs = _Epochs(
        step=step,
        rates=StepRates(train, steps_per_epoch),
        augment=train.augment,
        augment_generator=torch.Generator(device=device).manual_seed(settings.seed + AUGMENT_SEED_OFFSET),
        layout=layout,
    )
    eval_loss = make_loss(train.loss, dataset.classes)  # validation and test losses are never smoothed
    generator = torch.Generator(device=device).manual_seed(settings.seed)  # batch order
    stopper = EarlyStopper(train.early_stopping) if train.early_stopping else None
    result = TrialResult(params_count=models.count_params(model), channels_last=layout == torch.channels_last)
    started = time.perf_counter()
    for epoch in range(1, train.epochs + 1):
        epoch_start = time.perf_counter()
        rates = epochs.rates.epoch()
        lr = rates[0][0]  # the rate the epoch starts with
        train_loss, train_accuracy = _train_epoch(epochs, data, train.batch_size, generator, rates)
        val_loss, val_accuracy = evaluate(model, data.val, data, eval_loss, layout=layout)
        metrics = {
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - epoch_start,
        }
        result.history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if stopper is not None and stopper.should_stop(epoch, metrics, model):
            result.stopped_early = True
            break
    end_training(result, stopper, started, snapshot=lambda: copy.deepcopy(model), restore=model.load_state_dict,
                 network=lambda: model)
    if test:
        kept: list = []
        result.test_loss, result.test_accuracy = evaluate(model, data.test, data, eval_loss, kept, layout)
        result.predictions = torch.cat([p for p, _ in kept]).to(torch.uint8).cpu().numpy()
        result.confidences = torch.cat([c for _, c in kept]).to(torch.float16).cpu().numpy()
        linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if len(linear) == 1:  # a linear model: its weight rows are the class templates
            result.weights = linear[0].weight.detach().float().cpu().numpy()
    return result
