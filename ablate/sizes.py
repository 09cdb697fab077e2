"""Model sizes from the spec alone, so `ablate plan` can show them without importing torch.

tests/test_models.py checks these numbers against the torch modules models.py builds.
"""

from __future__ import annotations

from math import prod

from ablate.spec import CNNModel, ConvBlock, CustomModel, DatasetInfo, LinearModel, MLPModel, ModelSpec


class ShapeError(ValueError):
    """A model spec whose layers do not fit the input (a feature map shrinks to nothing)."""


def conv_shapes(model: CNNModel, dataset: DatasetInfo) -> list[tuple[int, int, int]]:
    """(channels, height, width) after each block, checking that every feature map stays ≥ 1×1."""
    channels, height, width = dataset.shape
    shapes = []
    for i, block in enumerate(model.blocks, 1):
        height = height + 2 * block.padding - block.kernel + 1
        width = width + 2 * block.padding - block.kernel + 1
        if height < 1 or width < 1:
            raise ShapeError(f"blocks[{i}]: its {block.kernel}×{block.kernel} conv leaves no feature map ({height}×{width})")
        if block.pool:
            height, width = height // 2, width // 2
            if height < 1 or width < 1:
                raise ShapeError(f"blocks[{i}]: max-pool of a 1-pixel feature map")
        channels = block.out
        shapes.append((channels, height, width))
    if model.head == "gap" and channels != dataset.classes:
        raise ShapeError(
            f"head 'gap' averages the last block's channels into the {dataset.classes} class scores, "
            f"so the last block must have out = {dataset.classes} (it has {channels}); or use head 'conv-gap'"
        )
    return shapes


def _conv_params(block: ConvBlock, channels_in: int) -> int:
    weights = block.out * channels_in * block.kernel**2 + block.out
    return weights + (2 * block.out if block.batchnorm else 0)


def params_count(model: ModelSpec, dataset: DatasetInfo) -> int:
    """Trainable parameters of the model ablate builds for this spec."""
    inputs = prod(dataset.shape)
    if isinstance(model, LinearModel):
        return inputs * dataset.classes + dataset.classes
    if isinstance(model, MLPModel):
        widths = (inputs, *model.hidden, dataset.classes)
        weights = sum(a * b + b for a, b in zip(widths, widths[1:]))
        batchnorm = 2 * sum(model.hidden) if model.batchnorm else 0  # gamma and beta per unit
        return weights + batchnorm
    if isinstance(model, CNNModel):
        shapes = conv_shapes(model, dataset)
        inputs = [dataset.shape[0]] + [c for c, _, _ in shapes[:-1]]
        total = sum(_conv_params(b, c) for b, c in zip(model.blocks, inputs))
        channels, height, width = shapes[-1]
        if model.head == "linear":
            total += channels * height * width * dataset.classes + dataset.classes
        elif model.head == "conv-gap":
            total += channels * dataset.classes + dataset.classes
        return total
    raise TypeError(f"no size rule for {type(model).__name__}")


def macs(model: ModelSpec, dataset: DatasetInfo) -> int | None:
    """Multiply-accumulates of one forward pass of one sample (linear and conv layers; None for custom models)."""
    inputs = prod(dataset.shape)
    if isinstance(model, LinearModel):
        return inputs * dataset.classes
    if isinstance(model, MLPModel):
        widths = (inputs, *model.hidden, dataset.classes)
        return sum(a * b for a, b in zip(widths, widths[1:]))
    if isinstance(model, CNNModel):
        total, channels, height, width = 0, dataset.shape[0], dataset.shape[1], dataset.shape[2]
        for block, (out, pooled_h, pooled_w) in zip(model.blocks, conv_shapes(model, dataset)):
            conv_h = height + 2 * block.padding - block.kernel + 1
            conv_w = width + 2 * block.padding - block.kernel + 1
            total += conv_h * conv_w * out * channels * block.kernel**2
            channels, height, width = out, pooled_h, pooled_w
        if model.head == "linear":
            total += channels * height * width * dataset.classes
        elif model.head == "conv-gap":
            total += height * width * channels * dataset.classes
        return total
    return None


def describe(model: ModelSpec, dataset: DatasetInfo) -> str:
    """One line a reader of a results table understands: '784 → 256 (BN, ReLU, dropout 0.5) → 10'."""
    inputs = prod(dataset.shape)
    if isinstance(model, LinearModel):
        return f"linear {inputs} → {dataset.classes}"
    if isinstance(model, MLPModel):
        extras = []
        if model.batchnorm:
            extras.append("BN")
        if model.activation != "none":
            extras.append({"relu": "ReLU", "gelu": "GELU", "tanh": "tanh"}[model.activation])
        if model.dropout:
            extras.append(f"dropout {model.dropout:g}")
        hidden = " → ".join(str(h) for h in model.hidden)
        inner = f" ({', '.join(extras)})" if extras else ""
        out = " → ReLU" if model.output_activation == "relu" else ""
        return f"mlp {inputs} → {hidden}{inner} → {dataset.classes}{out}"
    if isinstance(model, CNNModel):
        convs = "-".join(f"{b.out}{'p' if b.pool else ''}" for b in model.blocks)
        extras = [name for name, on in (("BN", any(b.batchnorm for b in model.blocks)),
                                        ("dropout", any(b.dropout for b in model.blocks))) if on]
        inner = f" ({', '.join(extras)})" if extras else ""
        return f"cnn {convs}{inner}, head {model.head}"
    if isinstance(model, CustomModel):
        kwargs = ", ".join(f"{k}={v!r}" for k, v in model.kwargs.items())
        return f"custom {model.factory}({kwargs})"
    raise TypeError(f"no description for {type(model).__name__}")
