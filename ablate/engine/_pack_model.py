"""The packed network: K trials' models of one architecture as one network with stacked weights.

Owns the stacking (each layer's K trials' parameters and buffers on a leading dimension), the batched forward
pass (linear layers one batched matmul, convolutions one grouped convolution, batch norm one call over K × C
channels, a resnet's blocks their packed branches joined by the block's own `join`), each trial's dropout mask drawn
as its single run draws it (on the CPU the counter-based stream keyed by the trial's own seed; on a GPU a generator
of its own), and reading a trial's weights back out: as a copy
(a best epoch kept), into a single run's network (what the trial's single run would end with), or as what
early stopping asks of a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ablate import models
from ablate.models import BasicBlock

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
    branches: dict[str, list[_Layer]] = field(default_factory=dict)  # a residual block's, packed in turn
    site: int = 0  # its index among the layers: what a single run's Dropout after this layer is keyed by
    steps: int = 0  # training passes so far: the step its masks are keyed by

    def parameters(self) -> list[torch.Tensor]:
        return [*self.params.values(), *(p for branch in self.branches.values() for layer in branch
                                         for p in layer.parameters())]

    def tensors(self) -> list[torch.Tensor]:
        return [*self.params.values(), *self.buffers.values(),
                *(t for branch in self.branches.values() for layer in branch for t in layer.tensors())]


def _layers_of(model: nn.Module) -> list[tuple[nn.Module, float]]:
    """The model's layers, each with the dropout rate that follows it (a single run has no Dropout at rate 0); a
    Sequential inside it (a resnet's stage) is read as its layers in place."""
    layers: list[tuple[nn.Module, float]] = []
    for module in models.leaves(model):  # the order a single run's Dropouts count their sites in
        if isinstance(module, nn.Dropout):
            layers[-1] = (layers[-1][0], module.p)
        else:
            layers.append((module, 0.0))
    return layers


def _branches(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """A residual block's branches that it has (each a Sequential), in BasicBlock.BRANCHES order; none elsewhere."""
    if not isinstance(module, BasicBlock):
        return []
    return [(name, getattr(module, name)) for name in BasicBlock.BRANCHES if getattr(module, name) is not None]


def _own_tensors(module: nn.Module) -> list[torch.Tensor]:
    """A layer's parameters, then its floating-point buffers, then its branches' layers': the order PackedNet stacks
    them in."""
    return [*(p for _, p in module.named_parameters(recurse=False)),
            *(b for _, b in module.named_buffers(recurse=False) if b is not None and b.dtype.is_floating_point),
            *(t for _, branch in _branches(module) for layer, _ in _layers_of(branch) for t in _own_tensors(layer))]


def _stack(per_model: list[list[tuple[nn.Module, float]]], device: torch.device) -> list[_Layer]:
    """K models' layers (each model's, in order) as packed layers: parameters and buffers stacked, the dropout rate
    each trial applies after each layer, a residual block's branches stacked alike."""
    layers = []
    for position, (module, _) in enumerate(per_model[0]):
        same = [layers[position][0] for layers in per_model]  # this layer in each model
        layer = _Layer(module, dropout=[layers[position][1] for layers in per_model], site=position)
        if any(layer.dropout):  # made once: a host-to-device copy per step would stall a GPU
            layer.keep = torch.tensor([1 - rate for rate in layer.dropout], device=device)
        for name, _ in module.named_parameters(recurse=False):
            layer.params[name] = torch.stack([dict(m.named_parameters(recurse=False))[name].detach()
                                              for m in same]).requires_grad_(True)
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and buffer.dtype.is_floating_point:
                layer.buffers[name] = torch.stack([dict(m.named_buffers(recurse=False))[name] for m in same])
        for name, _ in _branches(module):
            layer.branches[name] = _stack([_layers_of(getattr(m, name)) for m in same], device)
        layers.append(layer)
    return layers


class PackedNet:
    """K built-in models (linear, mlp, cnn or resnet) of one architecture as one network with stacked weights."""

    def __init__(self, networks: list[nn.Module], seeds: list[int],
                 layout: torch.memory_format = torch.contiguous_format):
        self.k = len(networks)
        self.seeds = seeds  # each trial's: its dropout masks' key
        self.layout = layout  # of the grouped activations and conv weights (ablate.engine's layout)
        per_model = [_layers_of(m) for m in networks]
        if len({tuple(type(m).__name__ for m, _ in layers) for layers in per_model}) != 1:
            raise ValueError("packed trials must share one architecture")
        device = next(networks[0].parameters()).device
        # A GPU's masks come from torch's generator, one per trial; the CPU's from the counter-based stream.
        self.generators = ([torch.Generator(device=device).manual_seed(seed) for seed in seeds]
                           if device.type != "cpu" else [])
        self.layers = _stack(per_model, device)
        self.training = True

    def parameters(self) -> list[torch.Tensor]:
        return [p for layer in self.layers for p in layer.parameters()]

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
        # stacked: (K, B, ...); grouped: (B, K·C, H, W), the trials as channel groups
        x, grouped = self._run(self.layers, images, grouped=False)
        if grouped:  # a head that ended in global pooling: (B, K·classes, 1, 1)
            x = x.reshape(x.shape[0], self.k, -1).transpose(0, 1)
        return x

    def _run(self, layers: list[_Layer], x: torch.Tensor, grouped: bool) -> tuple[torch.Tensor, bool]:
        for layer in layers:
            x, grouped = self._apply(layer, x, grouped)
            if self.training and layer.keep is not None:
                x = self._dropout(x, layer, grouped)
        return x, grouped

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, C, H, W) → (B, K·C, H, W)."""
        return x.transpose(0, 1).flatten(1, 2).contiguous(memory_format=self.layout)

    def _apply(self, layer: _Layer, x: torch.Tensor, grouped: bool) -> tuple[torch.Tensor, bool]:
        m, p = layer.module, layer.params
        if isinstance(m, nn.Flatten):
            return (x.reshape(x.shape[0], self.k, -1).transpose(0, 1) if grouped else x.flatten(2)), False
        if isinstance(m, nn.Linear):
            return torch.baddbmm(p["bias"].unsqueeze(1), x, p["weight"].transpose(1, 2)), False
        if isinstance(m, BasicBlock):  # the block's own join, over its branches packed; all of them grouped
            def run(name: str, value: torch.Tensor) -> torch.Tensor:
                return self._run(layer.branches[name], value, grouped=True)[0]

            return m.join(x if grouped else self._grouped(x), run, groups=self.k), True
        if isinstance(m, nn.Conv2d):
            if not grouped:
                x = self._grouped(x)
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
        """Each trial's mask as its single run draws it, in its own slice of the activations."""
        shape = (x.shape[0], x.shape[1] // self.k, *x.shape[2:]) if grouped else x.shape[1:]
        step, layer.steps = layer.steps, layer.steps + 1
        if x.device.type == "cpu":
            return x * self._counter_noise(x, layer, shape, step, grouped)
        noise = torch.empty(self.k, *shape, device=x.device)
        for k, (rate, generator) in enumerate(zip(layer.dropout, self.generators)):
            if rate > 0:
                noise[k].bernoulli_(1 - rate, generator=generator)
            else:
                noise[k].fill_(1.0)
        noise.div_(per_trial(layer.keep, noise))
        return x * (noise.transpose(0, 1).flatten(1, 2) if grouped else noise)

    def _counter_noise(self, x: torch.Tensor, layer: _Layer, shape: tuple[int, ...], step: int,
                       grouped: bool) -> torch.Tensor:
        """The CPU's dropout factors, laid out as `x`: trial k's slice (its channel group, or its stack entry) is
        its single run's mask at this layer and step (ablate.models' dropout_noise, keyed by its seed)."""
        noise = torch.empty_like(x)
        for k, (rate, seed) in enumerate(zip(layer.dropout, self.seeds)):
            part = noise[:, k * shape[1] : (k + 1) * shape[1]] if grouped else noise[k]
            if rate > 0:
                key = models.stream_key(seed, layer.site, step)
                part.copy_(models.dropout_noise(shape, rate, key, x.device, x.dtype))
            else:
                part.fill_(1.0)
        return noise

    def train(self, mode: bool = True) -> None:
        self.training = mode


def per_trial(values, like: torch.Tensor) -> torch.Tensor:
    """A (K,) vector shaped to broadcast against a stacked (K, ...) tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


class StateView:
    """What EarlyStopper asks of a model (state_dict), for trial i of a packed network."""

    def __init__(self, net: PackedNet, index: int):
        self.net, self.index = net, index

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(enumerate(self.net.state(self.index)))
