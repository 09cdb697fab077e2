"""kind = "mlp": fully connected layers on the flattened image (systems L, N and P)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ablate.datasets import Dataset
from ablate.fields import each_at_least, fraction_below_one, option
from ablate.models._kind import ModelKind

ACTIVATION_LABELS = {"relu": "ReLU", "gelu": "GELU", "tanh": "tanh"}


@dataclass(frozen=True)
class MLPModel:
    kind: Literal["mlp"] = option("mlp", "Fully connected network on the flattened input.")
    hidden: tuple[int, ...] = option((256,), "Width of each hidden layer, input side first.", each_at_least(1))
    activation: Literal["relu", "gelu", "tanh", "none"] = option("relu", "Activation after each hidden layer.")
    dropout: float = option(
        0.0, "Dropout probability after each hidden activation; 0 turns it off.", fraction_below_one
    )
    batchnorm: bool = option(False, "BatchNorm1d after each hidden linear layer, before the activation.")
    output_activation: Literal["none", "relu"] = option(
        "none", "Activation on the logits; `relu` reproduces system N's V1 (a lesson, not a recommendation)."
    )


class MLP(ModelKind[MLPModel]):
    name, spec = "mlp", MLPModel

    def params(self, spec: MLPModel, data: Dataset) -> int:
        widths = (data.inputs, *spec.hidden, data.classes)
        weights = sum(a * b + b for a, b in zip(widths, widths[1:]))
        batchnorm = 2 * sum(spec.hidden) if spec.batchnorm else 0  # gamma and beta per unit
        return weights + batchnorm

    def macs(self, spec: MLPModel, data: Dataset) -> int:
        widths = (data.inputs, *spec.hidden, data.classes)
        return sum(a * b for a, b in zip(widths, widths[1:]))

    def describe(self, spec: MLPModel, data: Dataset) -> str:
        extras = []
        if spec.batchnorm:
            extras.append("BN")
        if spec.activation != "none":
            extras.append(ACTIVATION_LABELS[spec.activation])
        if spec.dropout:
            extras.append(f"dropout {spec.dropout:g}")
        hidden = " → ".join(str(h) for h in spec.hidden)
        inner = f" ({', '.join(extras)})" if extras else ""
        out = " → ReLU" if spec.output_activation == "relu" else ""
        return f"mlp {data.inputs} → {hidden}{inner} → {data.classes}{out}"

    def build(self, spec: MLPModel, data: Dataset):
        """Linear → [BatchNorm] → activation → [Dropout] per hidden layer, then a linear head."""
        from torch import nn

        from ablate.models._dropout import Dropout, sited
        from ablate.models._torch import activation

        layers: list[nn.Module] = [nn.Flatten()]
        width = data.inputs
        for hidden in spec.hidden:
            layers.append(nn.Linear(width, hidden))
            if spec.batchnorm:
                layers.append(nn.BatchNorm1d(hidden))
            if spec.activation != "none":
                layers.append(activation(spec.activation))
            if spec.dropout > 0:
                layers.append(Dropout(spec.dropout))
            width = hidden
        layers.append(nn.Linear(width, data.classes))
        if spec.output_activation == "relu":
            layers.append(nn.ReLU())
        return sited(layers)

    def pack_blank(self, spec: MLPModel) -> MLPModel:
        return replace(spec, dropout=0.0)
