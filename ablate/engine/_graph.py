"""One trial's training step in two forms: eager (torch's optimizers, bit for bit what ablate has always computed)
and graph-safe (a step a CUDA graph can capture once and replay for every later batch).

A captured graph replays the kernels it recorded, on the memory it recorded them on, with the scalars it saw. So a
graph-safe step:

- reads its batch from static input buffers (the batch is gathered, augmented and normalised eagerly, then copied
  in: only the full-size batches replay; an epoch's shorter last batch runs the same step eagerly);
- reads its learning rate and momentum from device buffers filled at each epoch's start with the epoch's rates
  (StepRates: the values torch's scheduler would have set), at a position on the device that the step advances;
- uses ablate's own Adam, AdamW or SGD (_pack_optim's, with one trial) with its step count on the device and its
  state made before the first step: torch's capturable optimizers cover Adam but not SGD's momentum, nor a
  momentum that a one-cycle schedule changes at every step;
- accumulates its loss, accuracy and a "loss not finite" flag in device tensors, read once per epoch, where the
  divergence check, early stopping and pruning decide: nothing in a step waits for the device.

The graph-safe step runs eagerly too (on the CPU in the tests, where it is held to no host synchronisation and to
torch's optimizers' numbers within float tolerance); the engine captures it only on CUDA, with `[execution] graphs =
"auto"`, after a few eager warm-up steps on a side stream as torch's documentation prescribes. If the capture fails
(a custom model with host-side control flow, say), the trial goes on eagerly with the same step and says so once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from ablate.engine._optim import set_rates
from ablate.engine._pack_optim import PackedOptimizer
from ablate.spec import TrainSettings

WARMUP_STEPS = 3  # eager steps before the capture: lazy initialisation (cuDNN plans, the allocator) happens there

# How often the eager step looks at the on-device "loss not finite" flag: every step on the CPU (free there),
# every few steps on a GPU, where each look is a sync that would stall the queue of kernels.
DIVERGENCE_CHECK_EVERY = {"cpu": 1, "cuda": 25}


class Diverged(RuntimeError):
    """The training loss became NaN or infinite: the trial stops at once and is recorded FAILED (reason diverged)."""


class _Totals:
    """An epoch's running loss sum, correct count and "loss not finite" flag, on the device."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.not_finite = torch.zeros((), device=device, dtype=torch.bool)

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()
        self.not_finite.zero_()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * labels.shape[0]
        self.correct += (logits.detach().argmax(dim=1) == labels).sum()

    def read(self, images: int) -> tuple[float, float, bool]:
        """Mean loss, accuracy and whether the loss was ever not finite: the epoch's one host sync."""
        loss, hits, bad = torch.stack([self.loss_sum, self.correct.to(self.loss_sum.dtype),
                                       self.not_finite.to(self.loss_sum.dtype)]).tolist()
        return loss / images, hits / images, bool(bad)


class EagerStep:
    """Today's step: torch's optimizer, its rates set from the epoch's table before each step (what its scheduler
    would have set), the divergence flag looked at every DIVERGENCE_CHECK_EVERY steps."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, grad_clip: float | None,
                 device: torch.device):
        self.model, self.optimizer, self.loss_fn, self.grad_clip = model, optimizer, loss_fn, grad_clip
        self.totals = _Totals(device)
        self.check_every = DIVERGENCE_CHECK_EVERY.get(device.type, 25)
        self.rates: tuple[list[float], list[float]] = ([], [])

    def start_epoch(self, lrs: list[float], momenta: list[float]) -> None:
        self.rates = (lrs, momenta)
        self.totals.reset()

    def __call__(self, number: int, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Step `number` (from 1) of the epoch on one batch."""
        logits = self.model(images)
        loss = self.loss_fn(logits, labels)
        self.totals.not_finite |= ~torch.isfinite(loss.detach())
        if number % self.check_every == 0 and self.totals.not_finite.item():
            raise Diverged(f"training loss is not finite at step {number} of the epoch")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=True)  # no host sync
        set_rates(self.optimizer, self.rates[0][number - 1], self.rates[1][number - 1])
        self.optimizer.step()
        self.totals.add(loss, logits, labels)


class GraphStep:
    """The graph-safe step (the module's docstring). With `capture` (CUDA only), the first full batch after
    WARMUP_STEPS eager ones is captured as a CUDA graph, and every later full batch replays it."""

    def __init__(self, model: nn.Module, train: TrainSettings, loss_fn: Callable, device: torch.device,
                 steps_per_epoch: int, capture: bool):
        self.model, self.loss_fn, self.grad_clip = model, loss_fn, train.grad_clip
        self.optimizer = PackedOptimizer(list(model.parameters()), [train], device, graph_safe=True,
                                         momentum=train.optimizer != "sgd" or train.momentum > 0)
        self.totals = _Totals(device)
        self.lr = torch.zeros(steps_per_epoch, device=device)  # this epoch's, one per step
        self.momentum = torch.zeros(steps_per_epoch, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # the step within the epoch
        self.capture = capture
        self.warmup_left = WARMUP_STEPS if capture else 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.batch_size = train.batch_size  # a full batch: what the graph is captured for and replayed on
        self.inputs: tuple[torch.Tensor, torch.Tensor] | None = None  # the static batch a captured graph reads

    def start_epoch(self, lrs: list[float], momenta: list[float]) -> None:
        """The epoch's rates into the device buffers, the position and the totals back to zero (eager work between
        replays: the graph reads these tensors, never the lists)."""
        self.lr[: len(lrs)].copy_(torch.tensor(lrs, dtype=self.lr.dtype))
        self.momentum[: len(momenta)].copy_(torch.tensor(momenta, dtype=self.momentum.dtype))
        self.position.zero_()
        self.totals.reset()

    def body(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """One optimisation step, every number on the device: what the graph captures."""
        logits = self.model(images)
        loss = self.loss_fn(logits, labels)
        self.totals.not_finite |= ~torch.isfinite(loss.detach())
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=True)
        lr, momentum = self.lr.index_select(0, self.position), self.momentum.index_select(0, self.position)
        self.optimizer.step(lr, momentum)
        self.position += 1
        self.totals.add(loss, logits, labels)

    def __call__(self, number: int, images: torch.Tensor, labels: torch.Tensor) -> None:
        full = images.shape[0] == self.batch_size
        if self.graph is not None and full:
            self.inputs[0].copy_(images)
            self.inputs[1].copy_(labels)
            self.graph.replay()
        elif self.capture and full and self.warmup_left == 0:
            self._capture(images, labels)
        elif self.capture and full:
            self.warmup_left -= 1
            self._side_stream_step(images, labels)
        else:
            self._eager_step(images, labels)

    def _eager_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """The step run directly: before any capture the gradients are made afresh; after one they live in the
        graph's memory, and are zeroed there instead (the graph keeps writing to them)."""
        if self.graph is None:
            self.optimizer.zero_grad()
        else:
            for param in self.optimizer.params:
                if param.grad is not None:
                    param.grad.zero_()
        self.body(images, labels)

    def _side_stream_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._eager_step(images, labels)
        torch.cuda.current_stream().wait_stream(stream)

    def _capture(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Record the step on a static copy of this batch, then replay it: a capture records kernels without
        running them, so the replay is this batch's step."""
        self.inputs = (images.clone(), labels.clone())
        self.optimizer.zero_grad()  # the captured backward makes them, in the graph's memory
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.body(*self.inputs)
        except Exception as exc:  # noqa: BLE001 — any reason a model cannot be captured: train on eagerly
            warnings.warn(f"CUDA graph capture failed, this trial trains eagerly: {exc}", RuntimeWarning,
                          stacklevel=2)
            self.capture, self.inputs = False, None
            self._eager_step(images, labels)
            return
        self.graph = graph
        graph.replay()

