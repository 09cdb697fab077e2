"""torch modules built from model specs. Their sizes must match ablate.sizes (tested)."""

from __future__ import annotations

import importlib
from math import prod

import torch
from torch import nn

from ablate.sizes import conv_shapes
from ablate.spec import CNNModel, CustomModel, DatasetInfo, LinearModel, MLPModel, ModelSpec

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def build_model(spec: ModelSpec, dataset: DatasetInfo) -> nn.Module:
    inputs = prod(dataset.shape)
    if isinstance(spec, LinearModel):
        return nn.Sequential(nn.Flatten(), nn.Linear(inputs, dataset.classes))
    if isinstance(spec, MLPModel):
        return _mlp(spec, inputs, dataset.classes)
    if isinstance(spec, CNNModel):
        return _cnn(spec, dataset)
    if isinstance(spec, CustomModel):
        return _custom(spec)
    raise TypeError(f"no builder for {type(spec).__name__}")


def _mlp(spec: MLPModel, inputs: int, classes: int) -> nn.Sequential:
    """Linear → [BatchNorm] → activation → [Dropout] per hidden layer, then a linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = inputs
    for hidden in spec.hidden:
        layers.append(nn.Linear(width, hidden))
        if spec.batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        if spec.activation != "none":
            layers.append(ACTIVATIONS[spec.activation]())
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        width = hidden
    layers.append(nn.Linear(width, classes))
    if spec.output_activation == "relu":
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _cnn(spec: CNNModel, dataset: DatasetInfo) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = dataset.shape[0]
    for block in spec.blocks:
        layers.append(nn.Conv2d(channels, block.out, block.kernel, padding=block.padding))
        if block.batchnorm:
            layers.append(nn.BatchNorm2d(block.out))
        if block.activation != "none":
            layers.append(ACTIVATIONS[block.activation]())
        if block.dropout:
            layers.append(nn.Dropout(block.dropout))
        if block.pool:
            layers.append(nn.MaxPool2d(2))
        channels = block.out
    last, height, width = conv_shapes(spec, dataset)[-1]
    if spec.head == "linear":
        layers += [nn.Flatten(), nn.Linear(last * height * width, dataset.classes)]
    else:
        if spec.head == "conv-gap":
            layers.append(nn.Conv2d(last, dataset.classes, 1))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def _factory(spec: CustomModel):
    module_name, function = spec.factory.split(":")
    module = importlib.import_module(module_name)
    factory = getattr(module, function, None)
    if not callable(factory):
        raise AttributeError(f"module '{module_name}' has no function '{function}'")
    return factory


def _custom(spec: CustomModel, factory=None) -> nn.Module:
    """The user's factory called with the table's other keys; it must return an nn.Module."""
    model = (factory or _factory(spec))(**spec.kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec.factory} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def custom_size(spec: CustomModel, dataset: DatasetInfo) -> int:
    """Parameter count of a custom model, built on the meta device (no memory, no compute) and shape-checked."""
    factory = _factory(spec)  # imported outside the meta device: its module-level tensors must be real ones
    with torch.device("meta"):
        model = _custom(spec, factory)
        scores = model(torch.empty(2, *dataset.shape))
    if tuple(scores.shape) != (2, dataset.classes):
        raise ValueError(
            f"{spec.factory} maps a batch of shape (N, {', '.join(map(str, dataset.shape))}) to "
            f"{tuple(scores.shape)}; it must give (N, {dataset.classes}) class scores"
        )
    return count_params(model)


INITS = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
}


def initialise(model: nn.Module, scheme: str) -> None:
    """Re-initialise every linear and conv weight with the scheme, biases to zero; 'default' keeps PyTorch's."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            INITS[scheme](module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
