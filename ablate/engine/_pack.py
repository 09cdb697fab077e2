"""Packing: K trials of one architecture trained together as one batched model, in one process.

Every layer holds the K trials' weights stacked on a leading dimension: linear layers are one
batched matmul, convolutions one grouped convolution (the trials side by side as channel
groups), batch norm one call over K × C channels. Each trial keeps everything that makes it
itself: its own initial weights (built exactly as a single run builds them), its own batch
order and augmentation streams (per-trial generators), its dropout masks (on the CPU the
counter-based stream keyed by its own seed: the very masks its single run draws), its own
learning rate, momentum and weight decay at every step (tables precomputed by torch's own
schedulers), label smoothing, gradient clipping, early stopping and divergence. Nothing a
trial computes depends on its pack-mates, so a trial's numbers do not depend on which trials
it was packed with.

The K losses are summed before one backward pass: the gradient of the sum with respect to
one trial's weights is the gradient of that trial's own loss.

This module owns the packed training loop (a pack's streams, batches, epochs, evaluation, and each
trial concluded as it ends); the network is _pack_model's, the optimisation step _pack_optim's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ablate import datasets, models
from ablate._timeline import mark
from ablate.datasets import DeviceData, Split
from ablate.engine._augment import AUGMENT_SEED_OFFSET, apply, concat, draw
from ablate.engine._layout import conv_layout
from ablate.engine._pack_model import PackedNet, StateView
from ablate.engine._pack_optim import PackedOptimizer, clip, schedule_tables
from ablate.engine._train import EVAL_BATCH, Diverged, EarlyStopper, TrialResult, end_training
from ablate.spec import TrialSettings

PackEpochCallback = Callable[[int, int, dict[str, float]], None]  # (trial index in the pack, epoch, metrics)
PackEndCallback = Callable[[int, "TrialResult | Diverged"], None]  # (trial index in the pack, its outcome)


def _by_step(rows: list[list[float]], device) -> torch.Tensor:
    """Per-trial lists → one (steps, K) device tensor, so a step reads its K values without a host copy."""
    return torch.tensor(rows, dtype=torch.float32, device=device).T.contiguous()


def _losses(logits: torch.Tensor, labels: torch.Tensor, loss: str, smoothing: torch.Tensor | None) -> torch.Tensor:
    """Each trial's mean loss over its batch, (K,): what make_loss computes for one trial."""
    if loss == "mse":
        target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        return (logits.softmax(dim=-1) - target).pow(2).mean(dim=(1, 2))
    log_probs = logits.log_softmax(dim=-1)
    nll = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(dim=1)
    if smoothing is None:
        return nll
    return (1 - smoothing) * nll + smoothing * (-log_probs.mean(dim=-1)).mean(dim=1)


@torch.inference_mode()
def evaluate_packed(net: PackedNet, split: Split, data: DeviceData, loss: str, keep: list | None = None):
    """Each trial's mean loss and accuracy over a split, (K,) each, with one host sync."""
    net.train(False)
    device = split.labels.device
    loss_sum = torch.zeros(net.k, device=device)
    correct = torch.zeros(net.k, device=device, dtype=torch.long)
    for start in range(0, len(split), EVAL_BATCH):
        images = data.normalise(split.images[start : start + EVAL_BATCH])
        labels = split.labels[start : start + EVAL_BATCH]
        logits = net(images.unsqueeze(0).expand(net.k, *images.shape))
        stacked_labels = labels.expand(net.k, -1)
        loss_sum += _losses(logits, stacked_labels, loss, None) * labels.shape[0]
        correct += (logits.argmax(dim=-1) == stacked_labels).sum(dim=1)
        if keep is not None:
            confidence, predicted = logits.float().softmax(dim=-1).max(dim=-1)
            keep.append((predicted, confidence))
    values = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).cpu()
    return (values[0] / len(split)).tolist(), (values[1] / len(split)).tolist()


def pack_compatible(settings: list[TrialSettings]) -> None:
    """Raise unless the trials can share one packed network (design.pack_key groups only such trials)."""
    trains = [s.train for s in settings]
    same = lambda f: len({f(t) for t in trains}) == 1  # noqa: E731
    if not (same(lambda t: (t.epochs, t.batch_size, t.optimizer, t.nesterov, t.loss, t.augment))
            and len({(s.dataset, s.data) for s in settings}) == 1):
        raise ValueError("packed trials must share dataset, data, epochs, batch size, optimizer, loss and augmentation")


class _Packed:
    """The state of one packed training: network, optimizer, per-trial streams and bookkeeping."""

    def __init__(self, settings: list[TrialSettings], data: DeviceData, device: torch.device):
        pack_compatible(settings)
        self.settings, self.data, self.device = settings, data, device
        self.train = settings[0].train
        dataset = datasets.get(settings[0].dataset)
        built = []
        for s in settings:
            torch.manual_seed(s.seed)  # exactly a single run's initial weights
            model = models.build_model(s.model, dataset)
            models.initialise(model, s.train.init)
            built.append(model.to(device))
        self.params_count = models.count_params(built[0])
        self.linear_model = sum(isinstance(m, nn.Linear) for m in built[0].modules()) == 1
        self.layout = conv_layout(settings[0].model.kind, device)
        self.net = PackedNet(built, [s.seed for s in settings], self.layout)
        self.steps_per_epoch = math.ceil(len(data.train) / self.train.batch_size)
        trains = [s.train for s in settings]
        self.lr_logged, momenta = schedule_tables(trains, self.steps_per_epoch)  # float64: logged as single runs log it
        self.lr, self.momentum = _by_step(self.lr_logged, device), _by_step(momenta, device)
        self.optimizer = PackedOptimizer(self.net.parameters(), trains, device, momentum=any(map(any, momenta)))
        smoothing = [t.label_smoothing for t in trains]
        self.smoothing = torch.tensor(smoothing, device=device) if any(smoothing) else None
        clips = [math.inf if t.grad_clip is None else t.grad_clip for t in trains]
        self.max_norm = None if all(math.isinf(c) for c in clips) else torch.tensor(clips, device=device)
        self.order_generators = [torch.Generator(device=device).manual_seed(s.seed) for s in settings]
        self.augment_generators = [torch.Generator(device=device).manual_seed(s.seed + AUGMENT_SEED_OFFSET)
                                   for s in settings]
        self.step_number = 0

    def single_model(self, i: int, state: list[torch.Tensor] | None = None) -> nn.Module:
        """Trial i as a single run's network (its current weights, or `state`), its dropout keyed by its seed. Built
        without touching the global random stream (a GPU's dropout masks are drawn from it)."""
        with torch.random.fork_rng(devices=[]):
            model = models.build_model(self.settings[i].model, datasets.get(self.settings[i].dataset))
        models.seed_dropout(model, self.settings[i].seed)
        return self.net.single(i, model.to(self.device, memory_format=self.layout), state)

    def batches(self):
        """Each trial's batch indices, (K, B), from its own per-epoch permutation."""
        split = self.data.train
        orders = torch.stack([torch.randperm(len(split), device=self.device, generator=g)
                              for g in self.order_generators])
        for start in range(0, len(split), self.train.batch_size):
            yield orders[:, start : start + self.train.batch_size]

    def images(self, index: torch.Tensor) -> torch.Tensor:
        images = self.data.train.images[index]  # (K, B, C, H, W) uint8
        augment = self.train.augment
        if augment.active:
            k, b = index.shape
            draws = concat([draw(b, augment, g, self.device) for g in self.augment_generators])
            images = apply(images.flatten(0, 1).float(), draws, augment).unflatten(0, (k, b))
        return self.data.normalise(images)

    def epoch(self) -> tuple[list[float], list[float], list[bool]]:
        """One pass over the training set for every trial: (losses, accuracies, diverged) per trial."""
        net, k = self.net, len(self.settings)
        net.train(True)
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        not_finite = torch.zeros(k, device=self.device, dtype=torch.bool)
        for index in self.batches():
            labels = self.data.train.labels[index]
            logits = net(self.images(index))
            losses = _losses(logits, labels, self.train.loss, self.smoothing)
            not_finite |= ~torch.isfinite(losses.detach())
            self.optimizer.zero_grad()
            losses.sum().backward()  # d(sum)/d(trial k's weights) = d(trial k's loss)/d(its weights)
            if self.max_norm is not None:
                clip(self.optimizer.params, self.max_norm)
            self.optimizer.step(self.lr[self.step_number], self.momentum[self.step_number])
            self.step_number += 1
            if self.step_number == 1:
                mark("first step")
            loss_sum += losses.detach() * labels.shape[1]
            correct += (logits.detach().argmax(dim=-1) == labels).sum(dim=1)
        values = torch.stack([loss_sum, correct.to(loss_sum.dtype), not_finite.to(loss_sum.dtype)]).cpu()
        n = len(self.data.train)
        return (values[0] / n).tolist(), (values[1] / n).tolist(), [bool(v) for v in values[2]]


def train_pack(
    settings: list[TrialSettings], data: DeviceData, device: torch.device, on_epoch: PackEpochCallback | None = None,
    test: bool = True, on_end: PackEndCallback | None = None,
) -> list[TrialResult | Diverged]:
    """Train K compatible trials as one packed network; each gets the result its single run would get (a
    TrialResult), or the Diverged error that ended it. A trial is concluded — tested, and handed to `on_end` —
    as soon as it ends (diverged, stopped early, or at the last epoch), so a pack that dies later loses only
    the trials still training; a concluded trial's slot trains on unread until the pack is done."""
    packed = _Packed(settings, data, device)
    net, k = packed.net, len(settings)
    channels_last = packed.layout == torch.channels_last
    results: list[TrialResult | Diverged] = [TrialResult(params_count=packed.params_count, channels_last=channels_last)
                                             for _ in settings]
    stoppers = [EarlyStopper(s.train.early_stopping) if s.train.early_stopping else None for s in settings]
    active = set(range(k))
    started = time.perf_counter()
    for epoch in range(1, packed.train.epochs + 1):
        epoch_start = time.perf_counter()
        lr = [rates[packed.step_number] for rates in packed.lr_logged]
        train_loss, train_accuracy, diverged = packed.epoch()
        val_loss, val_accuracy = evaluate_packed(net, data.val, data, packed.train.loss)
        seconds = time.perf_counter() - epoch_start
        ended = []
        for i in sorted(active):
            if diverged[i]:
                results[i] = Diverged(f"training loss is not finite in epoch {epoch}")
                ended.append(i)
                continue
            metrics = {"train_loss": train_loss[i], "train_accuracy": train_accuracy[i], "val_loss": val_loss[i],
                       "val_accuracy": val_accuracy[i], "lr": lr[i], "epoch_seconds": seconds}
            results[i].history.append(metrics)
            if on_epoch is not None:
                on_epoch(i, epoch, metrics)
            stopper = stoppers[i]
            if stopper is not None and stopper.should_stop(epoch, metrics, StateView(net, i)):
                results[i].stopped_early = True
                ended.append(i)
            elif epoch == packed.train.epochs:
                ended.append(i)
        _conclude(packed, results, stoppers, ended, started, test, on_end)
        active -= set(ended)
        if not active:
            break
    return results


def _conclude(packed: _Packed, results: list, stoppers: list, ended: list[int], started: float, test: bool,
              on_end: PackEndCallback | None) -> None:
    """The trials that ended this epoch: their tested weights (the best epoch's, when early stopping keeps
    them) loaded into their slots, one test pass for them, then each handed over."""
    trained = [i for i in ended if isinstance(results[i], TrialResult)]
    for i in trained:
        end_training(results[i], stoppers[i], started, snapshot=lambda i=i: packed.single_model(i),
                     restore=lambda state, i=i: packed.net.load(i, list(state.values())),
                     network=lambda i=i: packed.single_model(i))
    if test and trained:
        _test(packed, results, trained)
    for i in ended:
        if on_end is not None:
            on_end(i, results[i])


def _test(packed: _Packed, results: list, trials: list[int]) -> None:
    kept: list = []
    losses, accuracies = evaluate_packed(packed.net, packed.data.test, packed.data, packed.train.loss, kept)
    predictions = torch.cat([p for p, _ in kept], dim=1).to(torch.uint8).cpu().numpy()
    confidences = torch.cat([c for _, c in kept], dim=1).to(torch.float16).cpu().numpy()
    weights = None
    if packed.linear_model:  # its one Linear layer (an output activation may follow it)
        layer = next(layer for layer in packed.net.layers if isinstance(layer.module, nn.Linear))
        weights = layer.params["weight"].detach().float().cpu().numpy()
    for i in trials:
        result = results[i]
        result.test_loss, result.test_accuracy = losses[i], accuracies[i]
        result.predictions, result.confidences = predictions[i], confidences[i]
        result.weights = None if weights is None else weights[i]
