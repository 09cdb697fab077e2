"""kind = "custom": the researcher's own torch module, from a factory function they name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ablate._own_code import foreign_code  # noqa: F401 — re-exported: ablate.export checks a saved model with it
from ablate.datasets import Dataset
from ablate.fields import factory_reference, option
from ablate.models._kind import ModelError, ModelKind


@dataclass(frozen=True, kw_only=True)
class CustomModel:
    """Every key besides `kind` and `factory` is passed to the factory as a keyword argument."""

    kind: Literal["custom"] = option(
        "custom", "Your own torch module: `factory(**kwargs)` must return an nn.Module mapping images to class scores."
    )
    factory: str = option(
        doc="`package.module:function`, importable where ablate runs (e.g. a module beside the study).",
        check=factory_reference,
    )
    kwargs: dict = option(
        {}, "Keyword arguments of the factory; any other key of the table lands here."
    )

    EXTRA_KEYS = "kwargs"  # where validation puts keys the schema does not name


def _factory(spec: CustomModel) -> Callable:
    module_name, function = spec.factory.split(":")
    module = importlib.import_module(module_name)
    factory = getattr(module, function, None)
    if not callable(factory):
        raise AttributeError(f"module '{module_name}' has no function '{function}'")
    return factory


def _call(spec: CustomModel, factory: Callable):
    """The user's factory called with the table's other keys; it must return an nn.Module."""
    from torch import nn

    model = factory(**spec.kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec.factory} returned {type(model).__name__}, not a torch.nn.Module")
    return model


class Custom(ModelKind[CustomModel]):
    name, spec = "custom", CustomModel
    packable = False  # its layers are the user's: ablate cannot stack them
    layout = ("factory", "kwargs")

    def params(self, spec: CustomModel, data: Dataset) -> int:
        """Built on torch's meta device (no memory, no compute) and shape-checked; any failure of the user's
        code is the factory's, reported at the `factory` key."""
        try:
            return self._meta_size(spec, data)
        except Exception as exc:
            raise ModelError(f"{type(exc).__name__}: {exc}", key="factory") from None

    def _meta_size(self, spec: CustomModel, data: Dataset) -> int:
        import torch

        from ablate.models._torch import count_params

        factory = _factory(spec)  # imported outside the meta device: its module-level tensors must be real ones
        with torch.device("meta"):
            model = _call(spec, factory)
            scores = model(torch.empty(2, *data.shape))
        if tuple(scores.shape) != (2, data.classes):
            raise ValueError(
                f"{spec.factory} maps a batch of shape (N, {', '.join(map(str, data.shape))}) to "
                f"{tuple(scores.shape)}; it must give (N, {data.classes}) class scores"
            )
        return count_params(model)

    def describe(self, spec: CustomModel, data: Dataset) -> str:
        kwargs = ", ".join(f"{k}={v!r}" for k, v in spec.kwargs.items())
        return f"custom {spec.factory}({kwargs})"

    def build(self, spec: CustomModel, data: Dataset):
        return _call(spec, _factory(spec))
