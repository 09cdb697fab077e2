"""The packed optimiser: each trial's own optimisation step, taken over the stacked weights of a packed network.

Owns the per-step learning-rate and momentum tables (read off torch's own optimizer and schedulers, so a packed
trial follows its single run's schedule exactly), the Adam, AdamW and SGD update with each trial's own
hyperparameters, and each trial's gradient clipping to its own norm limit.
"""

from __future__ import annotations

import math

import torch

from ablate.engine._optim import StepRates
from ablate.engine._pack_model import per_trial
from ablate.spec import TrainSettings

ADAM_BETA2, ADAM_EPS = 0.999, 1e-8  # torch's defaults, which single runs use too


def schedule_tables(trains: list[TrainSettings], steps_per_epoch: int) -> tuple[list[list[float]], list[list[float]]]:
    """Each trial's learning rate and momentum (SGD's momentum, Adam's beta1) at every step, one list per trial,
    read off torch's own optimizer and scheduler (StepRates), so packed trials follow exactly the schedule a single
    run follows."""
    lrs, momenta = [], []
    for train in trains:
        rates = StepRates(train, steps_per_epoch)
        lr, momentum = [], []
        for _ in range(train.epochs):
            epoch_lr, epoch_momentum = rates.epoch()
            lr += epoch_lr
            momentum += epoch_momentum
        lrs.append(lr)
        momenta.append(momentum)
    return lrs, momenta


class PackedOptimizer:
    """Adam, AdamW or SGD over stacked weights, with each trial's own hyperparameters, the same update torch
    computes for one trial."""

    def __init__(self, params: list[torch.Tensor], trains: list[TrainSettings], device, momentum: bool = True,
                 graph_safe: bool = False):
        self.params = params
        self.momentum = momentum  # False: plain SGD in every trial, no buffers needed
        self.kind = trains[0].optimizer
        self.nesterov = trains[0].nesterov
        self.weight_decay = torch.tensor([t.weight_decay for t in trains], device=device)
        self.decays = any(t.weight_decay for t in trains)  # a host bool: asking the tensor would sync a GPU
        self.steps = 0
        # graph_safe: the step count lives on the device and the state exists before the first step, so that a CUDA
        # graph captures one step and every replay is the next (a host count would be frozen into the graph). Zero
        # state is what a first step starts from: SGD's buffer becomes 0·momentum + g = g, as torch's clone of g.
        # Otherwise the state is made at the first step, as torch's optimizers make it.
        self.count = torch.zeros((), device=device) if graph_safe else None
        self.state: list[list[torch.Tensor]] = [
            [torch.zeros_like(p) for _ in range(self._buffers())] if graph_safe else [] for p in params]

    def _buffers(self) -> int:
        if self.kind == "sgd":
            return 1 if self.momentum else 0
        return 2

    def step(self, lr: torch.Tensor, momentum: torch.Tensor) -> None:
        self.steps += 1
        if self.count is not None:
            self.count.add_(1)
        with torch.no_grad():
            for param, state in zip(self.params, self.state):
                if param.grad is not None:
                    self._update(param, param.grad, state, lr, momentum)

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: list, lr, momentum) -> None:
        lr_, wd_ = per_trial(lr, p), per_trial(self.weight_decay, p)
        if self.kind == "sgd":
            if self.decays:
                g = g + wd_ * p
            if not self.momentum:
                p.sub_(lr_ * g)
                return
            if not state:
                state.append(g.clone())
            else:
                state[0].mul_(per_trial(momentum, p)).add_(g)
            g = g + per_trial(momentum, p) * state[0] if self.nesterov else state[0]
            p.sub_(lr_ * g)
            return
        if self.kind == "adamw":
            p.mul_(1 - lr_ * wd_)
        elif self.decays:
            g = g + wd_ * p
        if not state:
            state.extend([torch.zeros_like(p), torch.zeros_like(p)])
        exp_avg, exp_avg_sq = state
        beta1 = per_trial(momentum, p)
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(ADAM_BETA2).addcmul_(g, g, value=1 - ADAM_BETA2)
        if self.count is None:
            step_size = lr_ / (1 - beta1**self.steps)
            denom = (exp_avg_sq.sqrt() / math.sqrt(1 - ADAM_BETA2**self.steps)).add_(ADAM_EPS)
        else:  # the same, the count read on the device
            step_size = lr_ / (1 - beta1**self.count)
            denom = (exp_avg_sq.sqrt() / (1 - ADAM_BETA2**self.count).sqrt()).add_(ADAM_EPS)
        p.sub_(step_size * exp_avg / denom)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None


def clip(params: list[torch.Tensor], max_norm: torch.Tensor) -> None:
    """Each trial's gradients scaled to its own global norm limit, as clip_grad_norm_ does for one model."""
    norms = torch.stack([p.grad.pow(2).flatten(1).sum(dim=1) for p in params]).sum(dim=0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(per_trial(scale, p.grad))
