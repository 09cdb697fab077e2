"""Models: a registry of model kinds — each a `[model]` table and how it becomes a network.

Owns the kinds (`linear`, `mlp`, `cnn`, `resnet`, `custom`, `torchvision`): their schema tables, parameter and MAC
counts and one-line descriptions from the spec alone (torch-free, for `ablate plan`), the
torch modules they build for a dataset's shape and classes, what packed trials may differ in,
weight initialisation, and dropout's counter-based mask stream (_dropout: the same masks
single or packed, on any number of workers). Adding a kind is one module in this folder (a
ModelKind subclass and its table) plus its line in KINDS below.

May import: ablate.datasets (the registry side), ablate.fields, ablate.errors; torch only
when a network is built (`build_model`, `initialise`, `count_params` and the sizes of a custom
or torchvision model, which build it on the meta device).
"""

from __future__ import annotations

import typing
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING

from ablate.datasets import Dataset
from ablate.models._cnn import CNN, CNNModel, ConvBlock
from ablate.models._custom import Custom, CustomModel, foreign_code
from ablate.models._kind import ModelError, ModelKind
from ablate.models._linear import Linear, LinearModel
from ablate.models._mlp import MLP, MLPModel
from ablate.models._resnet import ResNet, ResNetModel
from ablate.models._torchvision import Torchvision, TorchvisionModel

if TYPE_CHECKING:
    from torch import nn

    from ablate.models._dropout import Dropout, dropout_noise, leaves, seed_dropout, stream_key
    from ablate.models._resnet_net import BasicBlock, Stage
    from ablate.models._torch import count_params, initialise

KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (Linear(), MLP(), CNN(), ResNet(), Custom(), Torchvision())}
MODEL_KINDS: dict[str, type] = {name: kind.spec for name, kind in KINDS.items()}  # kind name → schema table
# The union validation reads the kinds from.
ModelSpec = LinearModel | MLPModel | CNNModel | ResNetModel | CustomModel | TorchvisionModel

# Model settings that define the layers in a way only the one-line description reads well: a change of one of them
# is described as the new architecture.
LAYOUT_SETTINGS = tuple(dict.fromkeys(f"model.{key}" for kind in KINDS.values() for key in kind.layout))


def _table_valued(spec: type) -> list[str]:
    """The fields of a kind's table whose values are tables or lists of tables (unreadable as a column)."""
    hints = typing.get_type_hints(spec)
    found = []
    for f in fields(spec):
        hint, args = hints[f.name], typing.get_args(hints[f.name])
        if hint is dict or (typing.get_origin(hint) is tuple and args and is_dataclass(args[0])):
            found.append(f"model.{f.name}")
    return found


# Model settings whose values are tables: plan and report show them through the architecture, not as columns.
TABLE_SETTINGS = tuple(dict.fromkeys(key for kind in KINDS.values() for key in _table_valued(kind.spec)))

__all__ = [
    "BasicBlock",
    "CNNModel",
    "ConvBlock",
    "CustomModel",
    "Dropout",
    "KINDS",
    "LAYOUT_SETTINGS",
    "LinearModel",
    "MLPModel",
    "MODEL_KINDS",
    "ModelError",
    "ModelKind",
    "ModelSpec",
    "ResNetModel",
    "Stage",
    "TABLE_SETTINGS",
    "TorchvisionModel",
    "build_model",
    "count_params",
    "describe",
    "dropout_noise",
    "foreign_code",
    "initialise",
    "kind_of",
    "leaves",
    "macs",
    "pack_blank",
    "params_count",
    "seed_dropout",
    "stream_key",
]


def kind_of(spec: ModelSpec) -> ModelKind:
    return KINDS[spec.kind]


def params_count(spec: ModelSpec, data: Dataset) -> int:
    """Trainable parameters of the network ablate builds for this spec; ModelError when it does not fit the data."""
    return kind_of(spec).params(spec, data)


def macs(spec: ModelSpec, data: Dataset) -> int | None:
    """Multiply-accumulates of one forward pass of one image; None where the kind cannot tell (custom)."""
    return kind_of(spec).macs(spec, data)


def describe(spec: ModelSpec, data: Dataset) -> str:
    return kind_of(spec).describe(spec, data)


def pack_blank(spec: ModelSpec) -> ModelSpec | None:
    """The architecture packed trials must share (dropout rates blanked); None: this kind never packs."""
    kind = kind_of(spec)
    return kind.pack_blank(spec) if kind.packable else None


def build_model(spec: ModelSpec, data: Dataset) -> nn.Module:
    return kind_of(spec).build(spec, data)


_TORCH_SIDE = {"initialise": "_torch", "count_params": "_torch", "Dropout": "_dropout", "dropout_noise": "_dropout",
               "seed_dropout": "_dropout", "stream_key": "_dropout", "leaves": "_dropout",
               # a resnet's modules, which a packed network and the report look into
               "BasicBlock": "_resnet_net", "Stage": "_resnet_net"}


def __getattr__(name: str):
    if name in _TORCH_SIDE:  # the torch side, imported on first use (looked up on every use: a benchmark may swap it)
        import importlib

        return getattr(importlib.import_module(f"ablate.models.{_TORCH_SIDE[name]}"), name)
    raise AttributeError(f"module 'ablate.models' has no attribute {name!r}")
