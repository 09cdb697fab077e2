"""The torch modules of kind = "resnet": the basic block, a stage, and the network they make.

A block's branches are plain nn.Sequential layers, and how they combine is one method, `join`, that takes the
function running a branch: a single network runs its own, ablate.engine's packed network runs K trials' stacked
ones through the same `join`, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ablate.models._dropout import Dropout, sited


class Stage(nn.Sequential):
    """One stage's blocks: a container the report's activation figure shows as one column."""


def _norm(channels: int, norm: str) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels)] if norm == "batch" else []


class BasicBlock(nn.Module):
    """Two 3×3 convs (the first with the stride), each with its norm and ReLU in the original or pre-activation
    order, and, with `skip`, the input added to their output: as it is, through `projection` (1×1 conv and norm),
    or subsampled and padded with zero channels (`pad`, option A) where the block changes shape. Without `skip` it
    has no shortcut at all: the block of a plain network."""

    BRANCHES = ("pre", "body", "projection")  # its sub-layers, in the order a packed network stacks their weights

    def __init__(self, inputs: int, out: int, stride: int, *, skip: bool, preact: bool, norm: str, shortcut: str):
        super().__init__()
        bias = norm == "none"
        first = nn.Conv2d(inputs, out, 3, stride, 1, bias=bias)
        second = nn.Conv2d(out, out, 3, 1, 1, bias=bias)
        self.preact, self.skip, self.stride = preact, skip, stride
        if preact:
            self.pre = nn.Sequential(*_norm(inputs, norm), nn.ReLU())
            self.body = nn.Sequential(first, *_norm(out, norm), nn.ReLU(), second)
        else:
            self.pre = None
            self.body = nn.Sequential(first, *_norm(out, norm), nn.ReLU(), second, *_norm(out, norm))
        self.out_relu = None if preact else nn.ReLU()  # the original block's ReLU after the add
        reshapes = stride != 1 or inputs != out
        self.projection = (nn.Sequential(nn.Conv2d(inputs, out, 1, stride, bias=bias), *_norm(out, norm))
                           if skip and reshapes and shortcut == "projection" else None)
        self.pad = out - inputs if skip and reshapes and shortcut == "pad" else None  # zero channels to add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join(x, lambda name, value: getattr(self, name)(value), groups=1)

    def join(self, x: torch.Tensor, run: Callable[[str, torch.Tensor], torch.Tensor], groups: int) -> torch.Tensor:
        """The block's output from its branches, `run(name, input)`; `groups`: trials side by side in the channels
        (a packed network's), each padded on its own."""
        ready = run("pre", x) if self.pre is not None else x
        out = run("body", ready)
        if self.skip:
            if self.projection is not None:  # pre-activated input, as He et al. 2016b project it
                out = out + run("projection", ready)
            elif self.pad is not None:
                out = out + self._padded(x, groups)
            else:
                out = out + x
        return self.out_relu(out) if self.out_relu is not None else out

    def _padded(self, x: torch.Tensor, groups: int) -> torch.Tensor:
        """Option A's shortcut: every `stride`-th pixel, and `pad` zero channels after each group's own."""
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = x[:, :, :: self.stride, :: self.stride]
        batch, channels, height, width = x.shape
        x = F.pad(x.reshape(batch, groups, channels // groups, height, width), (0, 0, 0, 0, 0, self.pad))
        x = x.reshape(batch, -1, height, width)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def build_resnet(spec, channels: int, classes: int) -> nn.Sequential:
    """The network of a resolved ResNetModel: stem, Stage per width, [norm → ReLU], pooling, flatten, [dropout], head.
    One flat Sequential at the top, as the other kinds', with the stages inside."""
    imagenet = spec.stem == "imagenet"
    first = spec.widths[0]
    layers: list[nn.Module] = [nn.Conv2d(channels, first, 7 if imagenet else 3, 2 if imagenet else 1,
                                         3 if imagenet else 1, bias=spec.norm == "none")]
    if not spec.preact:  # a pre-activation network's first block normalises and activates the stem's output
        layers += [*_norm(first, spec.norm), nn.ReLU()]
    if imagenet:
        layers.append(nn.MaxPool2d(3, 2, 1))
    inputs = first
    for index, (blocks, out) in enumerate(zip(spec.depth, spec.widths)):
        layers.append(Stage(*(
            BasicBlock(inputs if b == 0 else out, out, 2 if index > 0 and b == 0 else 1, skip=spec.skip,
                       preact=spec.preact, norm=spec.norm, shortcut=spec.shortcut)
            for b in range(blocks))))
        inputs = out
    if spec.preact:
        layers += [*_norm(inputs, spec.norm), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if spec.dropout:
        layers.append(Dropout(spec.dropout))
    layers.append(nn.Linear(inputs, classes))
    return sited(layers)
