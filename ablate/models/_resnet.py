"""kind = "resnet": a residual network in the CIFAR style (He et al. 2016), with its design choices as settings.

A stem, stages of basic blocks (two 3×3 convolutions each), global average pooling and a linear head. Every
choice the residual-learning papers ablate is a setting: the identity paths themselves (`skip = false` is the
paper's "plain" network, the same layers without them), normalisation, pre-activation (He et al. 2016b), the
shortcut where a block changes shape (option A's zero padding or option B's projection) and the stem (`imagenet`
is torchvision's: depth [2, 2, 2, 2], widths [64, 128, 256, 512] and projection shortcuts give resnet18).

Sizes come from one walk over the layers (`_layers`), torch-free, so `ablate plan` shows them at once; the torch
modules are _resnet_net's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from ablate.datasets import Dataset
from ablate.fields import fraction_below_one, option
from ablate.models._kind import ModelError, ModelKind

STEM_WIDTHS = {"cifar": (16, 32, 64), "imagenet": (64, 128, 256, 512)}  # He et al.'s CIFAR nets; torchvision's


def _depths(v: int | tuple[int, ...]) -> str | None:
    values = (v,) if isinstance(v, int) else v
    if not values:
        return "must not be empty"
    return None if all(x >= 1 for x in values) else "every stage needs at least 1 block"


def _widths(v: tuple[int, ...]) -> str | None:
    if not v:
        return "must not be empty"
    return None if all(x >= 1 for x in v) else "every entry must be ≥ 1"


@dataclass(frozen=True, kw_only=True)
class ResNetModel:
    kind: Literal["resnet"] = option(
        "resnet", "Residual network (He et al. 2016): a stem, stages of basic blocks (two 3×3 convs each), global "
                  "average pooling, a linear head."
    )
    depth: int | tuple[int, ...] = option(
        3, "Basic blocks per stage: one number for every stage, or a list with one per stage (3 with the default "
           "widths: He et al.'s ResNet-20).", _depths
    )
    widths: tuple[int, ...] | None = option(
        None, "Channels of each stage; every stage after the first halves the feature map (its first block's stride "
              "is 2). Unset: [16, 32, 64] for the cifar stem, [64, 128, 256, 512] for the imagenet stem.", _widths
    )
    skip: bool = option(
        True, "The identity paths (and shortcuts) that add each block's input to its output; false: the same layers "
              "without them, He et al.'s plain network."
    )
    norm: Literal["batch", "none"] = option(
        "batch", "`batch`: BatchNorm2d with each conv (after it; before it when `preact`); `none`: no normalisation, "
                 "and the convs get biases instead."
    )
    preact: bool = option(
        False, "Pre-activation blocks (He et al. 2016b): norm → ReLU → conv, twice, then the add, with a norm → ReLU "
               "before the pooling; false: the original conv → norm → ReLU → conv → norm, add, ReLU."
    )
    shortcut: Literal["pad", "projection"] = option(
        "pad", "Where a block changes shape: `pad` (option A: the input subsampled by the stride, its new channels "
               "zeros; no parameters) or `projection` (option B: a 1×1 conv with the stride, and a norm)."
    )
    stem: Literal["cifar", "imagenet"] = option(
        "cifar", "`cifar`: a 3×3 conv, stride 1; `imagenet`: a 7×7 conv, stride 2, then a 3×3 max-pool, stride 2 "
                 "(torchvision's ResNets). The stem's norm and ReLU follow its conv, or with `preact` open the first "
                 "block."
    )
    dropout: float = option(0.0, "Dropout before the linear head; 0 turns it off.", fraction_below_one)

    def resolved(self) -> ResNetModel:
        """Widths and a depth per stage written out, and a plain network's (unused) shortcut at its default, so that
        equal networks hash equal."""
        widths = self.widths or STEM_WIDTHS[self.stem]
        depth = (self.depth,) * len(widths) if isinstance(self.depth, int) else self.depth
        return replace(self, widths=widths, depth=depth, shortcut=self.shortcut if self.skip else "pad")


@dataclass(frozen=True)
class Conv:
    """One convolution of the network: its channels, square kernel and stride, the map it outputs, and its bias."""

    inputs: int
    out: int
    kernel: int
    stride: int
    height: int  # of its output
    width: int
    bias: bool

    @property
    def params(self) -> int:
        return self.out * self.inputs * self.kernel**2 + (self.out if self.bias else 0)

    @property
    def macs(self) -> int:
        return self.height * self.width * self.out * self.inputs * self.kernel**2


def _halved(size: int, stride: int) -> int:
    """A map's size after a stride-`stride` conv (or pool) padded to keep it whole: ⌈size / stride⌉ (3×3 pad 1,
    7×7 pad 3, 1×1 pad 0 and the 3×3 pad 1 max-pool alike)."""
    return math.ceil(size / stride)


def _layers(spec: ResNetModel, data: Dataset) -> tuple[list[Conv], int, int]:
    """Every conv in the order the network applies them, the channels its norms see (2 parameters each) and the
    channels the head sees; ModelError for a spec that does not fit together."""
    spec = spec.resolved()
    widths, depth = spec.widths, spec.depth
    if len(depth) != len(widths):
        raise ModelError(f"depth lists {len(depth)} stages but widths {len(widths)}; give one number for every stage "
                         "or one per width", key="depth")
    if spec.skip and spec.shortcut == "pad" and any(b < a for a, b in zip(widths, widths[1:])):
        raise ModelError("shortcut 'pad' adds zero channels, so it cannot narrow a stage; make widths non-decreasing "
                         "or use shortcut = \"projection\"", key="widths")
    batch, bias = spec.norm == "batch", spec.norm == "none"
    channels, height, width = data.shape
    stride = 2 if spec.stem == "imagenet" else 1
    height, width = _halved(height, stride), _halved(width, stride)
    convs = [Conv(channels, widths[0], 7 if stride == 2 else 3, stride, height, width, bias)]
    if stride == 2:  # the max-pool
        height, width = _halved(height, 2), _halved(width, 2)
    normed = 0 if spec.preact else widths[0]
    channels = widths[0]
    for stage, (blocks, out) in enumerate(zip(depth, widths)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            height, width = _halved(height, stride), _halved(width, stride)
            convs += [Conv(channels, out, 3, stride, height, width, bias), Conv(out, out, 3, 1, height, width, bias)]
            normed += channels + out if spec.preact else 2 * out
            if spec.skip and spec.shortcut == "projection" and (stride != 1 or channels != out):
                convs.append(Conv(channels, out, 1, stride, height, width, bias))
                normed += out
            channels = out
    if spec.preact:
        normed += channels  # the norm before the pooling
    return convs, normed if batch else 0, channels


class ResNet(ModelKind[ResNetModel]):
    name, spec = "resnet", ResNetModel

    def params(self, spec: ResNetModel, data: Dataset) -> int:
        convs, normed, channels = _layers(spec, data)
        return sum(c.params for c in convs) + 2 * normed + channels * data.classes + data.classes

    def macs(self, spec: ResNetModel, data: Dataset) -> int:
        convs, _, channels = _layers(spec, data)
        return sum(c.macs for c in convs) + channels * data.classes

    def describe(self, spec: ResNetModel, data: Dataset) -> str:
        """E.g. 'resnet-20 3×[16,32,64] skip (BN, pad)' or 'resnet-20 3×[16,32,64] plain (BN)': He et al.'s layer
        count (convs and the head, shortcuts aside), blocks per stage × the stages' widths, then the choices."""
        spec = spec.resolved()
        layers = 2 * sum(spec.depth) + 2
        depth = str(spec.depth[0]) if len(set(spec.depth)) == 1 else f"[{','.join(map(str, spec.depth))}]"
        extras = ["BN" if spec.norm == "batch" else "no norm"]
        if spec.preact:
            extras.append("pre-act")
        if spec.skip and len(spec.widths) > 1:  # a shortcut only where a stage begins: the stem gives the first's width
            extras.append(spec.shortcut)
        if spec.stem == "imagenet":
            extras.append("imagenet stem")
        if spec.dropout:
            extras.append(f"dropout {spec.dropout:g}")
        widths = ",".join(map(str, spec.widths))
        return f"resnet-{layers} {depth}×[{widths}] {'skip' if spec.skip else 'plain'} ({', '.join(extras)})"

    def build(self, spec: ResNetModel, data: Dataset):
        from ablate.models._resnet_net import build_resnet

        _layers(spec, data)  # its errors before any module is made
        return build_resnet(spec.resolved(), data.shape[0], data.classes)

    def pack_blank(self, spec: ResNetModel) -> ResNetModel:
        return replace(spec.resolved(), dropout=0.0)
