"""The data a trial ran on, as its MLflow run's dataset input: what the runs table's Dataset column shows.

MLflow keeps a dataset once per experiment by its name and digest, with one schema and one profile. The name is the
dataset's (a factory's: its function and arguments); the digest is ablate's data fingerprint of the dataset
(ablate.datasets: sha256 of every array, a factory's key ends with it) hashed with the trial's split, since arms of
one study may split it differently (`[data]` per stage: val_size, split_seed, train_limit, test_limit) and the
profile holds the split's sizes: train, val and test examples, beside the fingerprint itself. The schema is the
images' tensor spec and the labels'; the source is the dataset's folder, or its factory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ablate import datasets

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput

    from ablate.datasets import DataSettings, DeviceData

CONTEXT = "training"  # the input's mlflow.data.context tag: the trial trained (and was tested) on it


def dataset_input(name: str, settings: DataSettings, data: DeviceData, data_dir: str | Path) -> DatasetInput:
    """The MLflow dataset input of a trial that ran on dataset `name` split by `settings` (`data`: as it was loaded;
    see the module docstring)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dataset = datasets.get(name)
    split = {"val_size": settings.val_size, "split_seed": settings.split_seed, "train_limit": settings.train_limit,
             "test_limit": settings.test_limit}
    digest = hashlib.sha256(json.dumps([data.fingerprint, split], sort_keys=True).encode()).hexdigest()[:12]
    profile = {"train": len(data.train), "val": len(data.val), "test": len(data.test),
               "classes": len(dataset.class_names), "data_fingerprint": data.fingerprint, **split}
    if datasets.is_factory_key(name):
        source_type, source = "code", {"factory": dataset.title}
    else:
        source_type, source = "local", {"uri": str((Path(data_dir) / dataset.folder).resolve())}
    record = Dataset(name=(name if not datasets.is_factory_key(name) else dataset.title)[:500], digest=digest,
                     source_type=source_type, source=json.dumps(source), schema=json.dumps(_schema(dataset, data)),
                     profile=json.dumps(profile))
    return DatasetInput(record, tags=[InputTag(MLFLOW_DATASET_CONTEXT, CONTEXT)])


def _schema(dataset: datasets.Dataset, data: DeviceData) -> dict:
    """MLflow's tensor schema of a dataset: images (N, C, H, W) as stored, integer labels (N,)."""
    import numpy as np
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.types import Schema, TensorSpec

    images = np.dtype(str(data.train.images.dtype).removeprefix("torch."))
    return TensorDatasetSchema(features=Schema([TensorSpec(images, (-1, *dataset.shape), "images")]),
                               targets=Schema([TensorSpec(np.dtype("int64"), (-1,), "labels")])).to_dict()
