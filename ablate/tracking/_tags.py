"""Names of what ablate records in MLflow — tags, artifacts, failure reasons — shared by its writers and readers.

Resume, `ablate plan` and the report find work by these names, so they never change: a store
written by an earlier version must still be read.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

# Tags of every run.
STUDY, ROLE, STAGE, STAGE_INDEX, SEED, TRIAL_HASH = "study", "role", "stage", "stage_index", "seed", "trial_hash"
CHANGES, ARCHITECTURE, ERROR, REASON = "changes", "architecture", "error", "reason"
PACK, PACK_SIZE, WORKER, DEVICE = "pack", "pack_size", "worker", "device"
# Who runs a run, and the proof it still does (ablate.tracking's liveness).
HOST, PID, PID_START, HEARTBEAT, HEARTBEAT_EVERY = "host", "pid", "pid_start", "heartbeat", "heartbeat_every"
# The fencing token of the claim a trial run was started under (ablate.tracking's claims).
CLAIM_TOKEN = "claim_token"
EXPERIMENT_TAG = "ablate.study"  # on the experiments ablate made: `ablate report` lists only those
# What MLflow's UI calls an experiment of trained models. MLflow 3.17's UI does not read it to choose where an
# experiment opens (a setting of the visitor's browser does, GenAI by default; see ablate.tracking's _view); earlier
# 3.x UIs do.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}

# On each invocation's parent run: the data folder it read (resolved) and the folders it imported the study's
# factories from (a JSON list: the study file's folder, then the current one), so that the report reads the same data
# and finds the same factories from wherever it is run.
DATA_DIR, IMPORT_PATHS = "data_dir", "import_paths"

PLAN_ARTIFACT = "plan.json"  # the full trial list of the spec, on every parent run
OUTPUTS_ARTIFACT = "test_outputs.npz"  # a trial's test predictions, confidences and, for a linear model, its weights

# Why a run ended FAILED (or KILLED): its `reason` tag.
FAILED_ERROR, DIVERGED, OOM, WORKER_LOST, INTERRUPTED = "error", "diverged", "oom", "worker-lost", "interrupted"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:// URI (sqlite:////abs/db → /abs/db; sqlite:///rel.db → rel.db), else None.
    Percent-escapes are decoded, as SQLAlchemy decodes them."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and parsed.path not in ("", "/:memory:"):
        return Path(unquote(parsed.path[1:]))
    return None


# A trial's trained models (ablate.tracking's models): MLflow models in these artifact folders, and the run's `model`
# tag saying what its models are now — the arm's best, saved (the best so far, or every run's under `all`), or
# pruned (a better run of its arm finished, under `best`).
MODEL_ARTIFACT, LAST_MODEL_ARTIFACT, MODEL_SETTINGS = "model", "model-last", "ablate.json"
MODEL, MODEL_ERROR = "model", "model_error"  # the run's model state; why its model could not be saved
MODEL_BEST, MODEL_SAVED, MODEL_PRUNED = "best", "saved", "pruned"
