"""kind = "cnn": convolution blocks, then a head (system C's models, system N's TinyVGG)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ablate.datasets import Dataset
from ablate.fields import at_least, fraction_below_one, nonempty, option
from ablate.models._kind import ModelError, ModelKind


@dataclass(frozen=True)
class ConvBlock:
    out: int = option(doc="Output channels of the 3×3 (or `kernel`) convolution.", check=at_least(1))
    kernel: int = option(3, "Square kernel size.", at_least(1))
    padding: int = option(0, "Zero padding on each side.", at_least(0))
    batchnorm: bool | None = option(None, "BatchNorm2d after the conv; unset: the model's `batchnorm`.")
    activation: Literal["relu", "gelu", "tanh", "none"] | None = option(
        None, "Activation after the conv (and BN); unset: the model's `activation`."
    )
    dropout: float | None = option(
        None, "Dropout after the activation; unset: the model's `dropout`.", fraction_below_one
    )
    pool: bool = option(False, "2×2 max-pool at the end of the block.")


@dataclass(frozen=True, kw_only=True)
class CNNModel:
    kind: Literal["cnn"] = option("cnn", "Convolution blocks, then a head.")
    blocks: tuple[ConvBlock, ...] = option(
        doc="Conv blocks in order: conv → BN → activation → dropout → max-pool, each part as the block says.",
        check=nonempty,
    )
    head: Literal["linear", "gap", "conv-gap"] = option(
        "linear",
        "`linear`: flatten → linear to the classes; `gap`: global average pool (the last block must output one "
        "channel per class); `conv-gap`: 1×1 conv to the classes → global average pool.",
    )
    batchnorm: bool | None = option(False, "Default `batchnorm` of every block (folded into the blocks).")
    activation: Literal["relu", "gelu", "tanh", "none"] | None = option("relu", "Default `activation` of every block.")
    dropout: float | None = option(0.0, "Default `dropout` of every block.", fraction_below_one)

    def resolved(self) -> CNNModel:
        """Fold the model-level defaults into every block, so equal networks hash equal."""
        blocks = tuple(
            replace(
                b,
                batchnorm=self.batchnorm if b.batchnorm is None else b.batchnorm,
                activation=self.activation if b.activation is None else b.activation,
                dropout=self.dropout if b.dropout is None else b.dropout,
            )
            for b in self.blocks
        )
        return replace(self, blocks=blocks, batchnorm=None, activation=None, dropout=None)


def conv_shapes(model: CNNModel, data: Dataset) -> list[tuple[int, int, int]]:
    """(channels, height, width) after each block, checking that every feature map stays ≥ 1×1."""
    channels, height, width = data.shape
    shapes = []
    for i, block in enumerate(model.blocks, 1):
        height = height + 2 * block.padding - block.kernel + 1
        width = width + 2 * block.padding - block.kernel + 1
        if height < 1 or width < 1:
            raise ModelError(f"blocks[{i}]: its {block.kernel}×{block.kernel} conv leaves no feature map "
                             f"({height}×{width})")
        if block.pool:
            height, width = height // 2, width // 2
            if height < 1 or width < 1:
                raise ModelError(f"blocks[{i}]: max-pool of a 1-pixel feature map")
        channels = block.out
        shapes.append((channels, height, width))
    if model.head == "gap" and channels != data.classes:
        raise ModelError(
            f"head 'gap' averages the last block's channels into the {data.classes} class scores, "
            f"so the last block must have out = {data.classes} (it has {channels}); or use head 'conv-gap'"
        )
    return shapes


def _conv_params(block: ConvBlock, channels_in: int) -> int:
    weights = block.out * channels_in * block.kernel**2 + block.out
    return weights + (2 * block.out if block.batchnorm else 0)


class CNN(ModelKind[CNNModel]):
    name, spec = "cnn", CNNModel
    layout = ("blocks",)

    def params(self, spec: CNNModel, data: Dataset) -> int:
        shapes = conv_shapes(spec, data)
        inputs = [data.shape[0]] + [c for c, _, _ in shapes[:-1]]
        total = sum(_conv_params(b, c) for b, c in zip(spec.blocks, inputs))
        channels, height, width = shapes[-1]
        if spec.head == "linear":
            total += channels * height * width * data.classes + data.classes
        elif spec.head == "conv-gap":
            total += channels * data.classes + data.classes
        return total

    def macs(self, spec: CNNModel, data: Dataset) -> int:
        total, (channels, height, width) = 0, data.shape
        for block, (out, pooled_h, pooled_w) in zip(spec.blocks, conv_shapes(spec, data)):
            conv_h = height + 2 * block.padding - block.kernel + 1
            conv_w = width + 2 * block.padding - block.kernel + 1
            total += conv_h * conv_w * out * channels * block.kernel**2
            channels, height, width = out, pooled_h, pooled_w
        if spec.head == "linear":
            total += channels * height * width * data.classes
        elif spec.head == "conv-gap":
            total += height * width * channels * data.classes
        return total

    def describe(self, spec: CNNModel, data: Dataset) -> str:
        convs = "-".join(f"{b.out}{'p' if b.pool else ''}" for b in spec.blocks)
        extras = [name for name, on in (("BN", any(b.batchnorm for b in spec.blocks)),
                                        ("dropout", any(b.dropout for b in spec.blocks))) if on]
        inner = f" ({', '.join(extras)})" if extras else ""
        return f"cnn {convs}{inner}, head {spec.head}"

    def build(self, spec: CNNModel, data: Dataset):
        from torch import nn

        from ablate.models._dropout import Dropout, sited
        from ablate.models._torch import activation

        layers: list[nn.Module] = []
        channels = data.shape[0]
        for block in spec.blocks:
            layers.append(nn.Conv2d(channels, block.out, block.kernel, padding=block.padding))
            if block.batchnorm:
                layers.append(nn.BatchNorm2d(block.out))
            if block.activation != "none":
                layers.append(activation(block.activation))
            if block.dropout:
                layers.append(Dropout(block.dropout))
            if block.pool:
                layers.append(nn.MaxPool2d(2))
            channels = block.out
        last, height, width = conv_shapes(spec, data)[-1]
        if spec.head == "linear":
            layers += [nn.Flatten(), nn.Linear(last * height * width, data.classes)]
        else:
            if spec.head == "conv-gap":
                layers.append(nn.Conv2d(last, data.classes, 1))
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        return sited(layers)

    def pack_blank(self, spec: CNNModel) -> CNNModel:
        resolved = spec.resolved()
        return replace(resolved, blocks=tuple(replace(b, dropout=0.0) for b in resolved.blocks))
