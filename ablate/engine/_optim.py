"""Loss functions, optimisers and learning-rate schedules, as a trial's settings name them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from ablate.spec import (
    ConstantSchedule,
    CosineSchedule,
    ExponentialSchedule,
    MultiStepSchedule,
    OneCycleSchedule,
    StepSchedule,
    TrainSettings,
    WarmupCosineSchedule,
)


def make_loss(
    name: str, classes: int, label_smoothing: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "cross_entropy":
        if label_smoothing:
            return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=label_smoothing)
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


@dataclass
class Schedule:
    """A torch LR scheduler and whether it steps after every batch (else after every epoch)."""

    scheduler: LRScheduler | None
    per_batch: bool

    def after_batch(self) -> None:
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()


def make_schedule(optimizer: torch.optim.Optimizer, train: TrainSettings, steps_per_epoch: int) -> Schedule:
    """Epoch-based schedules (step, multistep, exponential) step per epoch; the smooth ones per batch."""
    s = train.schedule
    total = train.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler
    if isinstance(s, ConstantSchedule):
        return Schedule(None, per_batch=False)
    if isinstance(s, StepSchedule):
        return Schedule(sched.StepLR(optimizer, s.step_size, s.gamma), per_batch=False)
    if isinstance(s, MultiStepSchedule):
        return Schedule(sched.MultiStepLR(optimizer, list(s.milestones), s.gamma), per_batch=False)
    if isinstance(s, ExponentialSchedule):
        return Schedule(sched.ExponentialLR(optimizer, s.gamma), per_batch=False)
    if isinstance(s, CosineSchedule):
        return Schedule(sched.CosineAnnealingLR(optimizer, T_max=total, eta_min=s.min_lr), per_batch=True)
    if isinstance(s, OneCycleSchedule):
        return Schedule(
            sched.OneCycleLR(
                optimizer, max_lr=train.lr, total_steps=total, pct_start=s.pct_start,
                div_factor=s.div_factor, final_div_factor=s.final_div_factor,
                # torch cycles momentum (Adam's beta1) between 0.85 and 0.95; plain SGD stays plain.
                cycle_momentum=train.optimizer != "sgd" or train.momentum > 0,
            ),
            per_batch=True,
        )
    if isinstance(s, WarmupCosineSchedule):
        warmup = max(1, round(s.warmup_epochs * steps_per_epoch))
        floor = s.min_lr / train.lr

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        return Schedule(sched.LambdaLR(optimizer, factor), per_batch=True)
    raise ValueError(f"unknown schedule {s!r}")

