"""Your own data: `dataset = { factory = "pkg.module:function", ... }` in a study file.

The factory is called with the table's other keys as keyword arguments and returns the train
and test images and labels (and, optionally, class names) — a mapping with the keys in ROLES
(+ `class_names`), or a tuple in that order. Images are uint8 or float, (N, C, H, W) or
(N, H, W); labels integers 0 … classes−1. The output is validated once per process and
fingerprinted (sha256 of every array), and the dataset is registered under a key that says
everything needed to rebuild it anywhere — `factory:pkg.module:function{kwargs as JSON}#fingerprint` —
so a worker process, a node of a cluster or `ablate report` calls the factory again from the
key alone, and a trial's hash (which holds the key) changes whenever the data does: changed
data never reuses old runs. A factory whose data differs between two calls with the same
arguments is refused there, since the runs would not be reproducible. A key read from a store
(`get(key, from_store=True)`: the report's) is rebuilt only when its factory is the researcher's
own code (ablate._own_code), never, say, a planted subprocess:run with the key's arguments.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ablate.datasets._dataset import FACTORY_PREFIX as PREFIX
from ablate.datasets._dataset import ROLES, Dataset, ForeignFactory, register
from ablate.datasets._fingerprint import FINGERPRINT_LENGTH
from ablate.datasets._fingerprint import fingerprint as _fingerprint
from ablate.errors import AblateError

_KEY = re.compile(rf"factory:([A-Za-z_][\w.]*:[A-Za-z_]\w*)(\{{.*\}})?#([0-9a-f]{{{FINGERPRINT_LENGTH}}})")


def from_factory(factory: str, kwargs: Mapping[str, Any]) -> Dataset:
    """Call the factory, validate what it returns and register it; the Dataset's name is the key trials carry."""
    arrays, class_names = _call(factory, dict(kwargs))
    fingerprint = _fingerprint(arrays, class_names)
    key = f"{PREFIX}{factory}{_kwargs_text(factory, kwargs)}#{fingerprint}"
    return _register(key, factory, kwargs, arrays, class_names)


def from_key(key: str, from_store: bool = False) -> Dataset:
    """The dataset a key names, rebuilt by calling its factory again; its data must be what the key was made from.
    A key read from a store (`from_store`) is rebuilt only when its factory is the researcher's own code: the key
    holds the factory's arguments, so a planted one could call any function with arguments of its choosing."""
    found = _KEY.fullmatch(key)
    if not found:
        raise AblateError(f"{key!r} is not a dataset factory key")
    factory, kwargs_text, fingerprint = found.groups()
    if from_store:
        from ablate._own_code import foreign_code

        reason = foreign_code(factory)
        if reason is not None:
            raise ForeignFactory(factory, reason)
    kwargs = json.loads(kwargs_text) if kwargs_text else {}
    arrays, class_names = _call(factory, kwargs)
    now = _fingerprint(arrays, class_names)
    if now != fingerprint:
        raise AblateError(
            f"dataset factory {factory} returned other data than when the study was planned (fingerprint {now}, "
            f"not {fingerprint}): a factory must return the same arrays every time it is called with the same "
            "arguments (seed any randomness), or its runs cannot be compared or resumed"
        )
    return _register(key, factory, kwargs, arrays, class_names)


def _kwargs_text(factory: str, kwargs: Mapping[str, Any]) -> str:
    if not kwargs:
        return ""
    try:
        return json.dumps(dict(kwargs), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except TypeError as exc:  # a TOML date or time
        raise AblateError(f"dataset factory {factory}: its arguments must be numbers, strings, booleans, lists or "
                          f"tables ({exc})") from None


def _register(key: str, factory: str, kwargs: Mapping, arrays: dict[str, np.ndarray], class_names: tuple) -> Dataset:
    images = arrays["train_images"]
    shape = images.shape[1:] if images.ndim == 4 else (1, *images.shape[1:])
    arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())

    def read(folder: Path) -> dict[str, np.ndarray]:
        return dict(arrays)  # read_arrays rebinds entries of what it gets: a fresh dict keeps these intact

    return register(Dataset(
        name=key, title=f"{factory}({arguments})", folder="", files=(), shape=tuple(int(s) for s in shape),
        class_names=class_names, train_size=len(arrays["train_labels"]), test_size=len(arrays["test_labels"]),
        read=read, pixel_bytes=images.dtype.itemsize,
    ))


def _call(factory: str, kwargs: dict) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """The factory's output as numpy arrays, checked; any failure of the user's code is one AblateError."""
    module_name, function_name = factory.split(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise AblateError(f"dataset factory {factory} cannot be imported ({type(exc).__name__}: {exc}); the module "
                          "must be importable from the current directory or the study file's folder") from exc
    try:
        returned = function(**kwargs)
    except Exception as exc:
        raise AblateError(f"dataset factory {factory} raised {type(exc).__name__}: {exc}") from exc
    return _checked(factory, returned)


def _checked(factory: str, returned: Any) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    def problem(message: str) -> AblateError:
        return AblateError(f"dataset factory {factory} returned {message}")

    if isinstance(returned, Mapping):
        missing = [role for role in ROLES if role not in returned]
        if missing:
            raise problem(f"a mapping without {', '.join(missing)}; it needs {', '.join(ROLES)} (and may give "
                          "class_names)")
        values, names = [returned[role] for role in ROLES], returned.get("class_names")
    elif isinstance(returned, tuple | list) and len(returned) in (4, 5):
        values, names = list(returned[:4]), (returned[4] if len(returned) == 5 else None)
    else:
        raise problem(f"{type(returned).__name__}; it must return a mapping with {', '.join(ROLES)} (and optionally "
                      "class_names), or those four arrays as a tuple (and class names fifth)")
    arrays = {role: _as_numpy(value) for role, value in zip(ROLES, values)}
    for split in ("train", "test"):
        _check_split(problem, split, arrays[f"{split}_images"], arrays[f"{split}_labels"])
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise problem(f"train images of shape {arrays['train_images'].shape[1:]} and test images of shape "
                      f"{arrays['test_images'].shape[1:]}; they must be the same")
    for role in ("train_images", "test_images"):
        if arrays[role].dtype != np.uint8:
            arrays[role] = arrays[role].astype(np.float32)  # uint8 stays uint8: a quarter of the memory
    for role in ("train_labels", "test_labels"):
        arrays[role] = arrays[role].astype(np.int64)
    return arrays, _class_names(problem, names, arrays)


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value))


def _check_split(problem, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    if images.ndim not in (3, 4):
        raise problem(f"{split} images of shape {images.shape}; they must be (N, C, H, W) or (N, H, W)")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise problem(f"{split} images of dtype {images.dtype}; they must be uint8 (0…255) or float")
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise problem(f"{split} images with NaN or infinite values")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise problem(f"{split} labels of shape {labels.shape} and dtype {labels.dtype}; they must be integers, (N,)")
    if len(labels) != len(images):
        raise problem(f"{len(images):,} {split} images but {len(labels):,} {split} labels")
    if len(labels) == 0:
        raise problem(f"no {split} examples")
    if labels.min() < 0:
        raise problem(f"{split} labels below 0 (the smallest is {labels.min()}); classes are numbered from 0")


def _class_names(problem, names: Any, arrays: dict[str, np.ndarray]) -> tuple[str, ...]:
    highest = int(max(arrays["train_labels"].max(), arrays["test_labels"].max()))
    if names is None:
        return tuple(str(k) for k in range(highest + 1))
    names = tuple(str(n) for n in names)
    if highest >= len(names):
        raise problem(f"labels up to {highest} but {len(names)} class names; labels must be 0…{len(names) - 1}")
    return names
