"""The `[data]` table of a study: how a trial takes its dataset (split, scaling, limits).

It lives with the datasets, which read it (the resident copy's split, its size on a device), and
ablate.spec re-exports it as a table of the study file, written with ablate.fields like the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ablate.fields import at_least, option


@dataclass(frozen=True)
class DataSettings:
    val_size: int = option(5000, "Validation examples split from the training set.", at_least(1))
    split_seed: int = option(0, "Seed of the train/validation split; the same split for every trial.")
    normalize: Literal["standard", "unit"] = option(
        "standard",
        "Pixel scaling: `standard` subtracts the training set's mean and divides by its std (Normalize); "
        "`unit` only scales to [0, 1] (ToTensor alone).",
    )
    train_limit: int | None = option(None, "Use only this many training examples (smoke tests).", at_least(1))
    test_limit: int | None = option(None, "Evaluate on only this many test examples (smoke tests).", at_least(1))
