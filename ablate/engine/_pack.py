"""Packing: K trials of one architecture trained together as one batched model, in one process.

Every layer holds the K trials' weights stacked on a leading dimension: linear layers are one
batched matmul, convolutions one grouped convolution (the trials side by side as channel
groups), batch norm one call over K × C channels. Each trial keeps everything that makes it
itself: its own initial weights (built exactly as a single run builds them), its own batch
order, augmentation and dropout streams (per-trial generators, so on the CPU a packed trial
draws the very masks its single run draws), its own learning rate, momentum and weight decay
at every step (tables precomputed by torch's own schedulers), label smoothing, gradient
clipping, early stopping and divergence. Nothing a trial computes depends on its pack-mates,
so a trial's numbers do not depend on which trials it was packed with.

The K losses are summed before one backward pass: the gradient of the sum with respect to
one trial's weights is the gradient of that trial's own loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ablate import datasets, models
from ablate.datasets import DeviceData, Split
from ablate.engine._augment import AUGMENT_SEED_OFFSET, apply, concat, draw
from ablate.engine._layout import conv_layout
from ablate.engine._optim import make_optimizer, make_schedule
from ablate.engine._train import EVAL_BATCH, Diverged, EarlyStopper, TrialResult
from ablate.spec import TrainSettings, TrialSettings

PackEpochCallback = Callable[[int, int, dict[str, float]], None]  # (trial index in the pack, epoch, metrics)
PackEndCallback = Callable[[int, "TrialResult | Diverged"], None]  # (trial index in the pack, its outcome)
ADAM_BETA2, ADAM_EPS = 0.999, 1e-8  # torch's defaults, which single runs use too

# Modules that act on each channel (or element) alone, so they apply to K trials' channels at once unchanged.
_PER_CHANNEL = (nn.ReLU, nn.GELU, nn.Tanh, nn.MaxPool2d, nn.AdaptiveAvgPool2d)


@dataclass
class _Layer:
    """One layer of the packed network: a module of the first trial's model (for its type and options),
    the K trials' stacked parameters and buffers, and the dropout rate each trial applies after it."""

    module: nn.Module
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    dropout: list[float] = field(default_factory=list)
    keep: torch.Tensor | None = None  # 1 - rate per trial, on the device, where some trial drops out here

    def tensors(self) -> list[torch.Tensor]:
        return [*self.params.values(), *self.buffers.values()]


def _layers_of(model: nn.Module) -> list[tuple[nn.Module, float]]:
    """The model's layers, each with the dropout rate that follows it (a single run has no Dropout at rate 0)."""
    layers: list[tuple[nn.Module, float]] = []
    for module in model:
        if isinstance(module, nn.Dropout):
            layers[-1] = (layers[-1][0], module.p)
        else:
            layers.append((module, 0.0))
    return layers


def _own_tensors(module: nn.Module) -> list[torch.Tensor]:
    """A layer's parameters, then its floating-point buffers: the order PackedNet stacks them in."""
    return [*(p for _, p in module.named_parameters(recurse=False)),
            *(b for _, b in module.named_buffers(recurse=False) if b is not None and b.dtype.is_floating_point)]


class PackedNet:
    """K built-in models (linear, mlp or cnn) of one architecture as one network with stacked weights."""

    def __init__(self, networks: list[nn.Module], dropout_generators: list[torch.Generator],
                 layout: torch.memory_format = torch.contiguous_format):
        self.k = len(networks)
        self.generators = dropout_generators
        self.layout = layout  # of the grouped activations and conv weights (ablate.engine's layout)
        per_model = [_layers_of(m) for m in networks]
        if len({tuple(type(m).__name__ for m, _ in layers) for layers in per_model}) != 1:
            raise ValueError("packed trials must share one architecture")
        device = next(networks[0].parameters()).device
        self.layers = []
        for position, (module, _) in enumerate(per_model[0]):
            layer = _Layer(module, dropout=[layers[position][1] for layers in per_model])
            if any(layer.dropout):  # made once: a host-to-device copy per step would stall a GPU
                layer.keep = torch.tensor([1 - rate for rate in layer.dropout], device=device)
            for name, _ in module.named_parameters(recurse=False):
                stacked = torch.stack([dict(layers[position][0].named_parameters())[name].detach()
                                       for layers in per_model])
                layer.params[name] = stacked.requires_grad_(True)
            for name, buffer in module.named_buffers(recurse=False):
                if buffer is not None and buffer.dtype.is_floating_point:
                    layer.buffers[name] = torch.stack([dict(layers[position][0].named_buffers())[name]
                                                       for layers in per_model])
            self.layers.append(layer)
        self.training = True

    def parameters(self) -> list[torch.Tensor]:
        return [p for layer in self.layers for p in layer.params.values()]

    def state(self, k: int) -> list[torch.Tensor]:
        """Trial k's weights and batch-norm statistics, copied (to keep a best epoch or a stopped trial's state)."""
        return [t[k].detach().clone() for layer in self.layers for t in layer.tensors()]

    @torch.no_grad()
    def single(self, k: int, model: nn.Module, state: list[torch.Tensor] | None = None) -> nn.Module:
        """`model` (a single run's network of this architecture) given trial k's weights and batch-norm statistics,
        or `state` (a copy taken earlier): the network the trial's single run would end with."""
        state = self.state(k) if state is None else state
        targets = [t for module, _ in _layers_of(model) for t in _own_tensors(module)]
        if [t.shape for t in targets] != [t.shape for t in state]:
            raise ValueError("the model does not have the packed trial's architecture")
        for target, saved in zip(targets, state):
            target.copy_(saved)
        return model

    @torch.no_grad()
    def load(self, k: int, state: list[torch.Tensor]) -> None:
        tensors = [t for layer in self.layers for t in layer.tensors()]
        for tensor, saved in zip(tensors, state):
            tensor[k].copy_(saved)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(K, B, C, H, W) images, one batch per trial → (K, B, classes) scores."""
        x, grouped = images, False  # stacked: (K, B, ...); grouped: (B, K·C, H, W), the trials as channel groups
        for layer in self.layers:
            x, grouped = self._apply(layer, x, grouped)
            if self.training and layer.keep is not None:
                x = self._dropout(x, layer, grouped)
        if grouped:  # a head that ended in global pooling: (B, K·classes, 1, 1)
            x = x.reshape(x.shape[0], self.k, -1).transpose(0, 1)
        return x

    def _apply(self, layer: _Layer, x: torch.Tensor, grouped: bool) -> tuple[torch.Tensor, bool]:
        m, p = layer.module, layer.params
        if isinstance(m, nn.Flatten):
            return (x.reshape(x.shape[0], self.k, -1).transpose(0, 1) if grouped else x.flatten(2)), False
        if isinstance(m, nn.Linear):
            return torch.baddbmm(p["bias"].unsqueeze(1), x, p["weight"].transpose(1, 2)), False
        if isinstance(m, nn.Conv2d):
            if not grouped:  # (K, B, C, H, W) → (B, K·C, H, W)
                x = x.transpose(0, 1).flatten(1, 2).contiguous(memory_format=self.layout)
            # (K·O, C, kh, kw): group k sees only trial k's channels
            weight = p["weight"].flatten(0, 1).contiguous(memory_format=self.layout)
            bias = p["bias"].flatten() if "bias" in p else None
            return F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, groups=self.k), True
        if isinstance(m, nn.BatchNorm2d):
            return self._batch_norm(layer, x), True
        if isinstance(m, nn.BatchNorm1d):  # (K, B, H) → (B, K·H) and back
            batch = x.shape[1]
            out = self._batch_norm(layer, x.transpose(0, 1).reshape(batch, -1))
            return out.reshape(batch, self.k, -1).transpose(0, 1), False
        if isinstance(m, _PER_CHANNEL):
            return m(x), grouped
        raise TypeError(f"{type(m).__name__} layers cannot be packed")

    def _batch_norm(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        m, p, b = layer.module, layer.params, layer.buffers
        return F.batch_norm(
            x, b["running_mean"].view(-1), b["running_var"].view(-1),  # views: the update lands in the stack
            p["weight"].flatten() if "weight" in p else None, p["bias"].flatten() if "bias" in p else None,
            self.training, m.momentum, m.eps,
        )

    def _dropout(self, x: torch.Tensor, layer: _Layer, grouped: bool) -> torch.Tensor:
        """Each trial's mask from its own generator, drawn as torch draws a single run's (CPU) dropout mask."""
        shape = (x.shape[0], x.shape[1] // self.k, *x.shape[2:]) if grouped else x.shape[1:]
        noise = torch.empty(self.k, *shape, device=x.device)
        for k, (rate, generator) in enumerate(zip(layer.dropout, self.generators)):
            if rate > 0:
                noise[k].bernoulli_(1 - rate, generator=generator)
            else:
                noise[k].fill_(1.0)
        noise.div_(_per_trial(layer.keep, noise))
        return x * (noise.transpose(0, 1).flatten(1, 2) if grouped else noise)

    def train(self, mode: bool = True) -> None:
        self.training = mode


def _per_trial(values, like: torch.Tensor) -> torch.Tensor:
    """A (K,) vector shaped to broadcast against a stacked (K, ...) tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def schedule_tables(trains: list[TrainSettings], steps_per_epoch: int) -> tuple[list[list[float]], list[list[float]]]:
    """Each trial's learning rate and momentum (SGD's momentum, Adam's beta1) at every step, one list per trial,
    read off torch's own optimizer and scheduler run on a dummy parameter, so packed trials follow exactly the
    schedule a single run follows."""
    lrs, momenta = [], []
    for train in trains:
        dummy = nn.Linear(1, 1)
        optimizer = make_optimizer(dummy, train)
        schedule = make_schedule(optimizer, train, steps_per_epoch)
        group = optimizer.param_groups[0]
        lr, momentum = [], []
        for _ in range(train.epochs):
            for _ in range(steps_per_epoch):
                lr.append(group["lr"])
                momentum.append(group["betas"][0] if "betas" in group else group["momentum"])
                optimizer.step()  # no gradients: nothing changes, but the scheduler sees a step was taken
                schedule.after_batch()
            schedule.after_epoch()
        lrs.append(lr)
        momenta.append(momentum)
    return lrs, momenta


def _by_step(rows: list[list[float]], device) -> torch.Tensor:
    """Per-trial lists → one (steps, K) device tensor, so a step reads its K values without a host copy."""
    return torch.tensor(rows, dtype=torch.float32, device=device).T.contiguous()


class PackedOptimizer:
    """Adam, AdamW or SGD over stacked weights, with each trial's own hyperparameters, the same update torch
    computes for one trial."""

    def __init__(self, params: list[torch.Tensor], trains: list[TrainSettings], device, momentum: bool = True):
        self.params = params
        self.momentum = momentum  # False: plain SGD in every trial, no buffers needed
        self.kind = trains[0].optimizer
        self.nesterov = trains[0].nesterov
        self.weight_decay = torch.tensor([t.weight_decay for t in trains], device=device)
        self.decays = any(t.weight_decay for t in trains)  # a host bool: asking the tensor would sync a GPU
        self.state: list[list[torch.Tensor]] = [[] for _ in params]
        self.steps = 0

    def step(self, lr: torch.Tensor, momentum: torch.Tensor) -> None:
        self.steps += 1
        with torch.no_grad():
            for param, state in zip(self.params, self.state):
                if param.grad is not None:
                    self._update(param, param.grad, state, lr, momentum)

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: list, lr, momentum) -> None:
        lr_, wd_ = _per_trial(lr, p), _per_trial(self.weight_decay, p)
        if self.kind == "sgd":
            if self.decays:
                g = g + wd_ * p
            if not self.momentum:
                p.sub_(lr_ * g)
                return
            if not state:
                state.append(g.clone())
            else:
                state[0].mul_(_per_trial(momentum, p)).add_(g)
            g = g + _per_trial(momentum, p) * state[0] if self.nesterov else state[0]
            p.sub_(lr_ * g)
            return
        if self.kind == "adamw":
            p.mul_(1 - lr_ * wd_)
        elif self.decays:
            g = g + wd_ * p
        if not state:
            state.extend([torch.zeros_like(p), torch.zeros_like(p)])
        exp_avg, exp_avg_sq = state
        beta1 = _per_trial(momentum, p)
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(ADAM_BETA2).addcmul_(g, g, value=1 - ADAM_BETA2)
        step_size = lr_ / (1 - beta1**self.steps)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - ADAM_BETA2**self.steps)).add_(ADAM_EPS)
        p.sub_(step_size * exp_avg / denom)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None


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


def _clip(params: list[torch.Tensor], max_norm: torch.Tensor) -> None:
    """Each trial's gradients scaled to its own global norm limit, as clip_grad_norm_ does for one model."""
    norms = torch.stack([p.grad.pow(2).flatten(1).sum(dim=1) for p in params]).sum(dim=0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(_per_trial(scale, p.grad))


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
        built, dropout_generators = [], []
        for s in settings:
            torch.manual_seed(s.seed)  # exactly a single run's initial weights...
            model = models.build_model(s.model, dataset)
            models.initialise(model, s.train.init)
            built.append(model.to(device))
            generator = torch.Generator(device=device)
            if device.type == "cpu":  # ...and its dropout stream, which continues from the global one
                generator.set_state(torch.get_rng_state())
            else:
                generator.manual_seed(s.seed)
            dropout_generators.append(generator)
        self.params_count = models.count_params(built[0])
        self.linear_model = sum(isinstance(m, nn.Linear) for m in built[0].modules()) == 1
        self.layout = conv_layout(settings[0].model.kind, device)
        self.net = PackedNet(built, dropout_generators, self.layout)
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
        """Trial i as a single run's network (its current weights, or `state`). Built without touching the global
        random stream, which a CPU pack's later trials' dropout streams were forked from."""
        with torch.random.fork_rng(devices=[]):
            model = models.build_model(self.settings[i].model, datasets.get(self.settings[i].dataset))
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
                _clip(self.optimizer.params, self.max_norm)
            self.optimizer.step(self.lr[self.step_number], self.momentum[self.step_number])
            self.step_number += 1
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
            if stopper is not None and stopper.should_stop(epoch, metrics, _StateView(net, i)):
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
        result, stopper = results[i], stoppers[i]
        result.train_seconds = time.perf_counter() - started
        result.tested_epoch = len(result.history)
        if stopper is not None and stopper.best_state is not None:
            if stopper.best_epoch != len(result.history):
                result.last_model = packed.single_model(i)
            packed.net.load(i, list(stopper.best_state.values()))
            result.tested_epoch = stopper.best_epoch
        result.model = packed.single_model(i)
    if test and trained:
        _test(packed, results, trained)
    for i in ended:
        if on_end is not None:
            on_end(i, results[i])


class _StateView:
    """What EarlyStopper asks of a model (state_dict), for trial i of a packed network."""

    def __init__(self, net: PackedNet, index: int):
        self.net, self.index = net, index

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(enumerate(self.net.state(self.index)))


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
