"""torch modules built from model specs. Their sizes must match ablate.sizes (tested)."""

from __future__ import annotations

from math import prod

from torch import nn

from ablate.spec import DatasetInfo, LinearModel, MLPModel, ModelSpec

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def build_model(spec: ModelSpec, dataset: DatasetInfo) -> nn.Module:
    inputs = prod(dataset.shape)
    if isinstance(spec, LinearModel):
        return nn.Sequential(nn.Flatten(), nn.Linear(inputs, dataset.classes))
    if isinstance(spec, MLPModel):
        return _mlp(spec, inputs, dataset.classes)
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
    return nn.Sequential(*layers)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
