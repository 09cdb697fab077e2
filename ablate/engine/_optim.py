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


class StepRates:
    """One trial's learning rate and momentum (SGD's momentum, Adam's beta1) at each of its steps, an epoch at a time:
    read off torch's own optimizer and scheduler driven on a dummy parameter, so they are exactly the values the
    scheduler would have set on the trial's optimizer before each step. The training loop sets them itself (as
    floats when eager; copied into device buffers a captured step reads) instead of stepping a scheduler between
    steps, which is host work a CUDA graph cannot hold."""

    def __init__(self, train: TrainSettings, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch
        self.optimizer = make_optimizer(nn.Linear(1, 1), train)
        self.schedule = make_schedule(self.optimizer, train, steps_per_epoch)
        self.group = self.optimizer.param_groups[0]
        self.optimizer.step()  # once (no gradients: nothing changes): a scheduler warns if its optimizer never stepped

    def epoch(self) -> tuple[list[float], list[float]]:
        """The next epoch's rates and momenta, one per step. A schedule that changes them only between epochs (or
        never) is read once for the epoch; a per-batch one is stepped as training would step it."""
        group, steps = self.group, self.steps_per_epoch
        if self.schedule.scheduler is None or not self.schedule.per_batch:
            lrs, momenta = [group["lr"]] * steps, [self._momentum()] * steps
        else:
            lrs, momenta = [], []
            for _ in range(steps):
                lrs.append(group["lr"])
                momenta.append(self._momentum())
                self.schedule.after_batch()
        self.schedule.after_epoch()
        return lrs, momenta

    def _momentum(self) -> float:
        return self.group["betas"][0] if "betas" in self.group else self.group["momentum"]


def set_rates(optimizer: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    """What a scheduler's step would have left on a torch optimizer: its learning rate and momentum (beta1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        else:
            group["momentum"] = momentum


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

