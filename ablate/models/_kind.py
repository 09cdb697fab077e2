"""What ablate needs of a model kind, written down once: the contract every entry of the registry keeps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from torch import nn

    from ablate.datasets import Dataset


class ModelError(ValueError):
    """A model spec that does not fit the data (a feature map shrinks to nothing, a head that cannot
    produce the classes) or that cannot be built (a custom factory that fails): a spec error at the
    model's table, or at `key` inside it."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


Spec = TypeVar("Spec")  # a kind's schema table


class ModelKind(Generic[Spec]):
    """One `kind` of `[model]`: its table and how it becomes a network for a dataset's shape and classes.

    `params`, `macs` and `describe` work from the spec alone, without torch, so `ablate plan` shows
    them at once; `build` imports torch and must produce a module whose parameter count is `params`
    (tests/models/test_kinds.py checks each kind). A kind that cannot fit the data raises ModelError from
    `params` — the first thing validation asks — so a bad architecture is a spec error before any run.
    """

    name: str
    spec: type[Spec]  # the schema table: a frozen dataclass written with ablate.fields, `kind` its first field
    packable: bool = True  # can trials of it train as one batched network (ablate.engine's packing)
    layout: tuple[str, ...] = ()  # its settings that a table shows through `describe`, not as raw values

    def params(self, spec: Spec, data: Dataset) -> int:
        raise NotImplementedError

    def macs(self, spec: Spec, data: Dataset) -> int | None:
        """Multiply-accumulates of one forward pass of one image (linear and conv layers); None: unknown."""
        return None

    def describe(self, spec: Spec, data: Dataset) -> str:
        """One line a reader of a results table understands, e.g. 'mlp 3072 → 256 (ReLU) → 100' (inputs C·H·W)."""
        raise NotImplementedError

    def build(self, spec: Spec, data: Dataset) -> nn.Module:
        raise NotImplementedError

    def pack_blank(self, spec: Spec) -> Spec:
        """The spec with what packed trials may differ in (dropout rates) set to one value, so that two
        trials whose blanked specs are equal can share one packed network."""
        return spec
