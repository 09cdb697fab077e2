"""Design: a study's trials — every arm with every seed, fully resolved — and their hash identity.

Owns the trial (its settings, stage, seed, architecture and parameter count), its identity
(the hash of its resolved settings, leaving out settings at their default, so renaming or
reordering stages keeps finished work), the no-op merging of grid points, what each arm
changes, which trials can train packed together, the order tasks go to workers in (longest first),
and the plan document a parent run carries.

May import: ablate.spec, ablate.models and ablate.datasets (their torch-free sides),
ablate.errors. Never torch or MLflow: `ablate plan` expands studies at once.
"""

from ablate.design._identity import HASH_LENGTH, flatten, format_value, identity, settings_hash
from ablate.design._order import longest_first, task_cost, trial_cost
from ablate.design._pack import PACKABLE_TRAIN, Pack, pack_key, pack_trials
from ablate.design._plan import plan_document, resident_needs
from ablate.design._trials import (
    Design,
    Trial,
    describe_changes,
    expand,
    expand_design,
    trial_for,
    varying_settings,
)

__all__ = ["Design", "HASH_LENGTH", "PACKABLE_TRAIN", "Pack", "Trial", "describe_changes", "expand", "expand_design",
           "flatten", "format_value", "identity", "longest_first", "pack_key", "pack_trials", "plan_document",
           "resident_needs", "settings_hash", "task_cost", "trial_cost", "trial_for", "varying_settings"]
