"""kind = "custom": the researcher's own torch module, from a factory function they name."""

from __future__ import annotations

import importlib
import importlib.util
import site
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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


def foreign_code(reference: str) -> str | None:
    """Why the factory `package.module:function` is not the researcher's own code — its module is Python's, an
    installed package's or ablate's, or the function was only imported into it — or None when it is (a module on
    the path outside those folders, e.g. beside the study). A factory that a store names (a saved model's
    ablate.json) is called only then: a store anyone may write to must not make ablate call, say, subprocess:run
    with arguments of its choosing. Imports the module (the researcher's own) to see where the function comes from."""
    module_name, _, function = reference.partition(":")
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "a module of Python's standard library"
    if top == "ablate":
        return "ablate's own code"
    found = importlib.util.find_spec(top)  # a top-level name: found without importing anything
    if found is None:
        return f"a module '{top}' not importable here (run from the folder that holds it)"
    where = [found.origin] if found.origin else list(found.submodule_search_locations or [])  # a namespace package
    if not where or any(Path(place).resolve().is_relative_to(folder) for place in where for folder in _installed()):
        return "an installed package"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 — the researcher's module fails to import: nothing to call
        return f"a module that fails to import here ({type(exc).__name__}: {exc})"
    defined_in = getattr(getattr(module, function, None), "__module__", None)
    if defined_in is None or defined_in.split(".")[0] != top:
        return f"not a function defined in {module_name} but imported there from {defined_in or 'elsewhere'}"
    return None


def _installed() -> set[Path]:
    """The folders of Python itself and of installed packages."""
    paths = sysconfig.get_paths()
    folders = [paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths]
    folders += [*site.getsitepackages(), site.getusersitepackages()]
    return {Path(folder).resolve() for folder in folders}


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
