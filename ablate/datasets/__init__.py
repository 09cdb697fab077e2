"""Datasets: a registry of what ablate trains on — the only place that knows a dataset.

Owns each dataset's files and their layout under the data folder (torchvision's; which folder:
`data_folder`), how they are read, its shape (C, H, W), classes and class names, split sizes and
the sizes a trial uses (`get`, `names`, `read_arrays`, `ensure_files`, `Dataset.split_sizes`),
whether its files are there (`data_files`, without reading them); the per-channel mean and std
of its training images, computed and cached (`train_stats`); a researcher's own data from a
factory function (`from_factory`); its `[data]` table (`DataSettings`: split, scaling, limits;
ablate.spec re-exports it) and its resident copy on a training device (`load` → `DeviceData`).
Everything downstream — models, parameter and MAC counts, augmentation, figures — takes the
shape and classes from here. Adding a dataset is one module in this folder that calls `register`.

May import: ablate.errors, ablate.fields, ablate._own_code; numpy, torch and torchvision only on the loading
side, which this package imports on first use (`load`, `DeviceData`, `Split`), so that validation and
`ablate plan` stay torch-free.
"""

from typing import TYPE_CHECKING

# The built-ins register in this order, the order `ablate schema` and errors list them in.
# isort: off
from ablate.datasets import _mnist, _cifar, _svhn  # noqa: F401
# isort: on
from ablate.datasets._dataset import (
    DEFAULT,
    ROLES,
    Dataset,
    ForeignFactory,
    is_factory_key,
    names,
    provide,
    register,
    unregister,
)
from ablate.datasets._registry import (
    DATA_DIR_ENV,
    DataFiles,
    check_data,
    data_files,
    data_folder,
    ensure_files,
    get,
    read_arrays,
    train_stats,
)
from ablate.datasets._settings import DataSettings

if TYPE_CHECKING:
    from ablate.datasets._factory import from_factory
    from ablate.datasets._resident import DeviceData, Split, load

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT",
    "ROLES",
    "DataFiles",
    "DataSettings",
    "Dataset",
    "DeviceData",
    "ForeignFactory",
    "Split",
    "check_data",
    "data_files",
    "data_folder",
    "ensure_files",
    "from_factory",
    "get",
    "is_factory_key",
    "load",
    "names",
    "provide",
    "read_arrays",
    "register",
    "train_stats",
    "unregister",
]

_RESIDENT = ("load", "DeviceData", "Split")  # the torch side, imported on first use


def __getattr__(name: str):
    if name in _RESIDENT:
        from ablate.datasets import _resident

        return getattr(_resident, name)
    if name == "from_factory":  # numpy, imported only by a study that names a factory
        from ablate.datasets._factory import from_factory

        return from_factory
    raise AttributeError(f"module 'ablate.datasets' has no attribute {name!r}")
