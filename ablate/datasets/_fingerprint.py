"""A dataset's fingerprint: a short sha256 of every array it holds and of its class names.

A factory's dataset carries its fingerprint in its key (ablate.datasets' _factory: changed data
never reuses old runs); a dataset read from files gets the same fingerprint, computed once per
process when it is loaded (a tenth of a second for MNIST), which is what MLflow's record of a
run's dataset names it by.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ablate.datasets._dataset import ROLES, is_factory_key

FINGERPRINT_LENGTH = 12
_KNOWN: dict[str, str] = {}  # dataset name → its fingerprint, in this process


def fingerprint(arrays: dict[str, np.ndarray], class_names: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for role in ROLES:
        array = arrays[role]
        digest.update(f"{role}:{array.dtype.str}:{array.shape};".encode())
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    digest.update("\x00".join(class_names).encode())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def data_fingerprint(name: str, arrays: dict[str, np.ndarray], class_names: tuple[str, ...]) -> str:
    """The fingerprint of dataset `name`, whose arrays (as read_arrays returned them) are `arrays`: a factory's from
    its key, any other's computed once per process."""
    if is_factory_key(name):
        return name.rsplit("#", 1)[-1]
    if name not in _KNOWN:
        _KNOWN[name] = fingerprint(arrays, class_names)
    return _KNOWN[name]
