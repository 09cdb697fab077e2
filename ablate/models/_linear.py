"""kind = "linear": one linear layer from the flattened image to the classes (system L's model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ablate.datasets import Dataset
from ablate.fields import option
from ablate.models._kind import ModelKind


@dataclass(frozen=True)
class LinearModel:
    kind: Literal["linear"] = option("linear", "One linear layer from the flattened input to the classes.")


class Linear(ModelKind[LinearModel]):
    name, spec = "linear", LinearModel

    def params(self, spec: LinearModel, data: Dataset) -> int:
        return data.inputs * data.classes + data.classes

    def macs(self, spec: LinearModel, data: Dataset) -> int:
        return data.inputs * data.classes

    def describe(self, spec: LinearModel, data: Dataset) -> str:
        return f"linear {data.inputs} → {data.classes}"

    def build(self, spec: LinearModel, data: Dataset):
        from torch import nn

        return nn.Sequential(nn.Flatten(), nn.Linear(data.inputs, data.classes))
