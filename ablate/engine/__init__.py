"""Engine: training on the device — one trial, or K trials packed into one batched network.

Owns the training loop (data resident on the device, batches as index slices of an on-device
permutation, no host sync per step), evaluation, early stopping and divergence, losses,
optimisers and learning-rate schedules, augmentation on the device, and packing (K trials of
one architecture as one network with stacked weights, each keeping its own numbers).

May import: torch, ablate.datasets (the resident data), ablate.models (networks),
ablate.spec (the settings it trains). Never MLflow or Optuna: what to record is the
caller's (ablate.run), told through the epoch callbacks.
"""

from ablate.engine._augment import AUGMENT_SEED_OFFSET, Draws, affine_draws, affine_theta, augment_batch, resample
from ablate.engine._augment import apply as apply_augment  # a batch's crop/flip/affine draws, then applied
from ablate.engine._augment import draw as draw_augment
from ablate.engine._malloc import steady_allocations
from ablate.engine._optim import Schedule, make_loss, make_optimizer, make_schedule
from ablate.engine._pack import train_pack
from ablate.engine._pack_model import PackedNet
from ablate.engine._probe import packed_speedup
from ablate.engine._saved import Classifier, Served, deployable, servable
from ablate.engine._train import Diverged, EarlyStopper, EpochCallback, TrialResult, evaluate, train_trial

__all__ = [
    "AUGMENT_SEED_OFFSET",
    "Classifier",
    "Diverged",
    "Draws",
    "deployable",
    "EarlyStopper",
    "EpochCallback",
    "PackedNet",
    "Schedule",
    "Served",
    "TrialResult",
    "affine_draws",
    "affine_theta",
    "apply_augment",
    "augment_batch",
    "draw_augment",
    "evaluate",
    "make_loss",
    "make_optimizer",
    "make_schedule",
    "packed_speedup",
    "resample",
    "servable",
    "steady_allocations",
    "train_pack",
    "train_trial",
]
