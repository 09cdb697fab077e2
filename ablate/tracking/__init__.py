"""Tracking: everything ablate keeps in MLflow, and who is still alive.

Owns the MLflow side of a study (experiment, parent run per invocation, child run per trial,
their tags and artifacts — `Tracker` —; the trained models, also as MLflow logged models; the
data each trial ran on, as its dataset input; the runs view the printed link opens), the names of
what is recorded (shared by writers and readers, so a store written by an earlier version is
still read), the read-only view of a store that `ablate plan` uses without importing MLflow
(`trial_statuses`), liveness: whether the process behind a RUNNING run is still there, by its pid
on this host and by its heartbeat from any other (`alive`, `Heartbeat`), and claims: who may
train a trial, decided by a conditional write in a database only one claimant can win (`Claims`;
the protocol is written down in _claims.py, which database a study's invocations share in
_claims_url.py).

May import: ablate.design (trials), ablate.datasets (a trial's data, described), ablate.errors;
MLflow only on its MLflow side, which this package imports on first use (`Tracker`,
`environment_tags`, `read_plan`, `latest_plan`, `parent_runs`), so that `ablate plan` stays MLflow-free.
"""

from typing import TYPE_CHECKING

from ablate.tracking._claims import LEASE_SECONDS, Claimed, Claims, Fence, Lease
from ablate.tracking._claims_url import CLAIMS_ENV, claims_label, claims_url
from ablate.tracking._handlers import restore_signal_handlers
from ablate.tracking._inputs import dataset_input
from ablate.tracking._liveness import (
    BEAT_SECONDS,
    STALE_AFTER,
    Heartbeat,
    Identity,
    alive,
    beat_is_fresh,
    heartbeat_tags,
    process_start,
)
from ablate.tracking._logged import MODEL_TYPE, delete_logged_models, logged_models
from ablate.tracking._models import ARM_METRIC, beaten, model_runs, save_model, settle_models, stand_ins
from ablate.tracking._store import (
    TRACKING_URI_ENV,
    RunState,
    check_store,
    default_uri,
    store_is_new,
    store_label,
    store_uri,
    trial_statuses,
)
from ablate.tracking._tags import (
    ARCHITECTURE,
    CHANGES,
    CLAIM_TOKEN,
    DATA_DIR,
    DEVICE,
    DIVERGED,
    ERROR,
    EXPERIMENT_KIND,
    EXPERIMENT_TAG,
    FAILED_ERROR,
    HEARTBEAT,
    HEARTBEAT_EVERY,
    HOST,
    IMPORT_PATHS,
    INTERRUPTED,
    LAST_MODEL_ARTIFACT,
    MODEL,
    MODEL_ARTIFACT,
    MODEL_BEST,
    MODEL_ERROR,
    MODEL_PRUNED,
    MODEL_SAVED,
    MODEL_SETTINGS,
    OOM,
    OUTPUTS_ARTIFACT,
    PACK,
    PACK_SIZE,
    PID,
    PID_START,
    PLAN_ARTIFACT,
    REASON,
    ROLE,
    SEED,
    STAGE,
    STAGE_INDEX,
    STUDY,
    TRIAL_HASH,
    WORKER,
    WORKER_LOST,
    sqlite_path,
)
from ablate.tracking._uri import check_tracking_uri
from ablate.tracking._view import VIEW_TAG, models_url, runs_url, runs_view

if TYPE_CHECKING:
    from ablate.tracking._open import GuardedClient, open_client
    from ablate.tracking._tracker import Tracker, artifact_folder, environment_tags, latest_plan, parent_runs, read_plan
    from ablate.tracking._tracker_claims import Claim, Settled

__all__ = [
    "CLAIMS_ENV",
    "CLAIM_TOKEN",
    "Claimed",
    "Claims",
    "Fence",
    "LEASE_SECONDS",
    "Lease",
    "Settled",
    "artifact_folder",
    "check_tracking_uri",
    "GuardedClient",
    "open_client",
    "claims_label",
    "claims_url",
    "ARM_METRIC",
    "LAST_MODEL_ARTIFACT",
    "MODEL",
    "MODEL_ARTIFACT",
    "MODEL_BEST",
    "MODEL_ERROR",
    "MODEL_PRUNED",
    "MODEL_SAVED",
    "MODEL_SETTINGS",
    "MODEL_TYPE",
    "dataset_input",
    "beaten",
    "delete_logged_models",
    "logged_models",
    "model_runs",
    "save_model",
    "settle_models",
    "stand_ins",
    "ARCHITECTURE",
    "Claim",
    "BEAT_SECONDS",
    "CHANGES",
    "DATA_DIR",
    "DEVICE",
    "DIVERGED",
    "ERROR",
    "EXPERIMENT_KIND",
    "EXPERIMENT_TAG",
    "FAILED_ERROR",
    "HEARTBEAT",
    "HEARTBEAT_EVERY",
    "HOST",
    "Heartbeat",
    "IMPORT_PATHS",
    "INTERRUPTED",
    "Identity",
    "OOM",
    "OUTPUTS_ARTIFACT",
    "PACK",
    "PACK_SIZE",
    "PID",
    "PID_START",
    "PLAN_ARTIFACT",
    "REASON",
    "ROLE",
    "RunState",
    "SEED",
    "STAGE",
    "STAGE_INDEX",
    "STALE_AFTER",
    "STUDY",
    "TRIAL_HASH",
    "Tracker",
    "check_store",
    "default_uri",
    "store_is_new",
    "store_label",
    "store_uri",
    "TRACKING_URI_ENV",
    "WORKER",
    "WORKER_LOST",
    "alive",
    "beat_is_fresh",
    "environment_tags",
    "heartbeat_tags",
    "process_start",
    "latest_plan",
    "parent_runs",
    "read_plan",
    "restore_signal_handlers",
    "runs_url",
    "models_url",
    "runs_view",
    "VIEW_TAG",
    "sqlite_path",
    "trial_statuses",
]

_MLFLOW_SIDE = {
    "Claim": "_tracker_claims",
    "Settled": "_tracker_claims",
    "Tracker": "_tracker",
    "artifact_folder": "_tracker",
    "environment_tags": "_tracker",
    "read_plan": "_tracker",
    "latest_plan": "_tracker",
    "parent_runs": "_tracker",
    "GuardedClient": "_open",
    "open_client": "_open",
}  # name → its module (MLflow loads with it)


def __getattr__(name: str):
    if name in _MLFLOW_SIDE:  # imported on first use: MLflow takes seconds to import
        import importlib

        return getattr(importlib.import_module(f"ablate.tracking.{_MLFLOW_SIDE[name]}"), name)
    raise AttributeError(f"module 'ablate.tracking' has no attribute {name!r}")
