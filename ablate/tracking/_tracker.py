"""Everything MLflow: experiments, parent and trial runs, what is already done, who is still alive.

One experiment per study; one parent run per `ablate run`; one child run per trial,
carrying the trial hash as a tag so resume and reports find work by identity. All calls
go through an explicit MlflowClient with explicit run ids (no global active run), so the
same code works from worker processes and against a remote tracking server.

This module owns the plain MLflow calls; the trial runs under claims (claim, commit, settle) are
_tracker_claims', which Tracker inherits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

import ablate
from ablate.design import Trial
from ablate.errors import StoreError
from ablate.tracking._liveness import Identity, alive, heartbeat_tags
from ablate.tracking._open import GuardedClient, open_client
from ablate.tracking._store import RunState, store_label
from ablate.tracking._tags import (
    ARCHITECTURE,
    CHANGES,
    ERROR,
    EXPERIMENT_KIND,
    EXPERIMENT_TAG,
    HEARTBEAT,
    HOST,
    INTERRUPTED,
    PID,
    PLAN_ARTIFACT,
    REASON,
    ROLE,
    SEED,
    STAGE,
    STAGE_INDEX,
    STUDY,
    TRIAL_HASH,
    sqlite_path,
)
from ablate.tracking._tracker_claims import ClaimedRuns
from ablate.tracking._view import VIEW_TAG, runs_view

# MLflow draws a tqdm bar for every artifact it downloads; a report reads one per study.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking", "mlflow.store"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def _artifact_root(uri: str) -> str | None:
    """Keep artifacts beside a local SQLite store (mlartifacts/), not in whatever folder we run from."""
    database = sqlite_path(uri)
    return (database.resolve().parent / "mlartifacts").as_uri() if database else None


def artifact_folder(study: str) -> str:
    """The study's artifact folder name: the study name when it makes a short, plain file name, else a plain
    prefix of it and a hash of the whole (a name too long for the file system, or one with a '/', must not crash
    the run)."""
    plain = re.sub(r"[^A-Za-z0-9._-]+", "-", study).strip("-.") or "study"
    if plain == study and len(study) <= 100:
        return study
    return f"{plain[:80]}-{hashlib.sha256(study.encode()).hexdigest()[:10]}"


def git_commit(folder: Path) -> str | None:
    """The commit of the working tree holding the study, '+dirty' when it has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


class Tracker(ClaimedRuns):
    """Everything ablate writes to and reads from MLflow (see the module docstring); trial runs under claims are
    ClaimedRuns' (ablate.tracking._tracker_claims)."""

    def __init__(self, uri: str, claims: str | None = None):
        self.uri = uri
        self._claims_url = claims  # the claims database (ablate.tracking's claims); None: derived from the store
        self._claims = None  # the claims database, opened on first use (ClaimedRuns.claims)
        self._scopes: dict[str, str] = {}
        # MLflow prints "🏃 View run … at: …" for every run a tracking server's client ends, a line per trial in the
        # middle of ablate's progress; ablate prints the one link that is useful, at the end.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.client: MlflowClient = GuardedClient(open_client(uri), uri)  # type: ignore[assignment]

    # -- experiments -----------------------------------------------------------------

    def experiment(self, study: str) -> str:
        """The study's experiment id, created if needed (by the parent, before any worker starts). Two invocations
        creating it at once both get the one that won; an experiment of that name that ablate did not make is
        refused (its runs are not a study's, and the report would never show ours)."""
        found = self.client.get_experiment_by_name(study)
        if found is None:
            root = _artifact_root(self.uri)
            location = f"{root}/{artifact_folder(study)}" if root else None
            try:
                return self.client.create_experiment(study, artifact_location=location,
                                                    tags={EXPERIMENT_TAG: study, **EXPERIMENT_KIND})
            except MlflowException:
                found = self.client.get_experiment_by_name(study)  # created by another invocation meanwhile
                if found is None:
                    raise
        if found.tags.get(EXPERIMENT_TAG) != study:
            raise StoreError(
                f"tracking store {store_label(self.uri)} already holds an MLflow experiment named '{study}' that "
                "ablate did not create: rename the study ([study] name) or use another store (--tracking-uri); "
                "that experiment was not touched")
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        return found.experiment_id

    def show_runs(self, experiment_id: str, arms: list[str]) -> None:
        """The experiment's runs view, with `arms` expanded (ablate.tracking's _view), written where it changed."""
        view = runs_view(arms)
        if self.client.get_experiment(experiment_id).tags.get(VIEW_TAG) != view:
            self.client.set_experiment_tag(experiment_id, VIEW_TAG, view)

    def finished_hashes(self, experiment_id: str) -> set[str]:
        """Hashes of trials with a FINISHED run: the work resume must not repeat."""
        runs = self.search(experiment_id, f"tags.{ROLE} = 'trial' and attributes.status = 'FINISHED'")
        return {run.data.tags[TRIAL_HASH] for run in runs if TRIAL_HASH in run.data.tags}

    def search(self, experiment_id: str, filter_string: str) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    # -- runs ------------------------------------------------------------------------

    def start_parent(
        self, experiment_id: str, study_name: str, spec_path: Path, trials: int, tags: dict[str, str]
    ) -> str:
        """The run of one `ablate run`, its first heartbeat included; `tags` carry who runs it (environment_tags)."""
        tags = {STUDY: study_name, ROLE: "parent", "trials": str(trials), **tags, **heartbeat_tags()}
        run = self.client.create_run(experiment_id, tags=tags,
                                     run_name=f"{study_name}-{time.strftime('%Y%m%d-%H%M%S')}")
        self.client.log_artifact(run.info.run_id, str(spec_path))
        return run.info.run_id

    def start_trial(
        self, experiment_id: str, parent_id: str, trial: Trial, env_tags: dict[str, str], role: str = "trial"
    ) -> str:
        tags = {
            MLFLOW_PARENT_RUN_ID: parent_id,
            MLFLOW_RUN_NAME: f"{trial.stage}-s{trial.seed}",
            STUDY: trial.study,
            ROLE: role,
            STAGE: trial.stage,
            STAGE_INDEX: str(trial.stage_index),
            SEED: str(trial.seed),
            TRIAL_HASH: trial.hash,
            CHANGES: trial.changes,
            ARCHITECTURE: trial.architecture,
            **env_tags,
            **heartbeat_tags(),
        }
        run = self.client.create_run(experiment_id, tags=tags, run_name=tags[MLFLOW_RUN_NAME])
        params = [Param(k, v) for k, v in trial.params().items()]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def finish(
        self, run_id: str, status: str = "FINISHED", error: str | None = None, reason: str | None = None
    ) -> None:
        tags = [RunTag(ERROR, error[:5000])] if error is not None else []
        if reason is not None:
            tags.append(RunTag(REASON, reason))
        if tags:
            self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, status=status)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def log_text(self, run_id: str, text: str, artifact: str) -> None:
        self.client.log_text(run_id, text, artifact)

    def log_artifact(self, run_id: str, path: str, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, path, folder)

    def log_artifacts(self, run_id: str, folder: str, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, folder, artifact_path)

    def run_files(self, run_id: str) -> GuardedClient:
        """The run's own artifacts (an MLflow ArtifactRepository, its failures StoreErrors): list_artifacts(path),
        download_artifacts(path, dst_path). Not the client's calls, which read `runs:/<run>/model` as the run's folder
        merged with its logged model's files, and look that logged model up in the process's global tracking store
        (mlflow.get_tracking_uri()), not in this one: listing fails, or finds another store's model."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        uri = self.client.get_run(run_id).info.artifact_uri
        return GuardedClient(get_artifact_repository(uri, tracking_uri=self.uri), self.uri)  # type: ignore[arg-type]

    def log_inputs(self, run_id: str, inputs: list, attempts: int = 3) -> None:
        """The run's dataset inputs (mlflow.entities.DatasetInput: ablate.tracking's dataset_input). MLflow looks for
        the experiment's dataset, then adds it where missing: two workers starting their first trials at once both
        add it, and the second write fails on the database's unique key; written again, it finds the first's."""
        for attempt in range(attempts):
            try:
                self.client.log_inputs(run_id, datasets=inputs)
                return
            except MlflowException:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def run_state(self, run_id: str) -> RunState:
        run = self.client.get_run(run_id)
        return RunState(run.info.status, dict(run.data.metrics), dict(run.data.tags))

    def beat(self, run_ids: list[str]) -> None:
        """One heartbeat on each run: their process is alive (see ablate.tracking's liveness)."""
        tag = RunTag(HEARTBEAT, heartbeat_tags()[HEARTBEAT])
        for run_id in run_ids:
            self.client.log_batch(run_id, tags=[tag])

    # -- liveness, and the runs a dead invocation left behind -------------------------

    def run_alive(self, run_id: str) -> bool:
        """Is a run still being worked on: RUNNING, its own process alive and, for a child run, its invocation too?
        A run the store does not hold (deleted) is not."""
        try:
            state = self.run_state(run_id)
        except MlflowException:
            return False
        if state.status != "RUNNING" or not alive(state.tags):
            return False
        parent = state.tags.get(MLFLOW_PARENT_RUN_ID)
        return parent is None or self.run_alive(parent)

    def recover_stale(self, experiment_id: str) -> tuple[list[dict[str, str]], set[str]]:
        """Mark FAILED (reason `interrupted`) the trial runs an `ablate run` killed with -9 left RUNNING, and their
        invocations' parent runs.

        A trial run is abandoned when its claim's holder is gone (settle: a committed one is completed FINISHED
        instead). Returns the recovered trials (their tags) and the hashes of trials still running elsewhere (which
        this invocation must not start a second time). A search trial's run is search's to recover (its Optuna
        trial is its claim)."""
        parents = self.search(experiment_id, f"tags.{ROLE} = 'parent' and attributes.status = 'RUNNING'")
        recovered, elsewhere = [], set()
        for run in self.search(experiment_id, f"tags.{ROLE} = 'trial' and attributes.status = 'RUNNING'"):
            tags = run.data.tags
            who = f"pid {tags.get(PID, '?')} on {tags.get(HOST, '?')}"
            settled = self.settle(run.info.run_id, "FAILED",
                                  error=f"left RUNNING by an ablate run that is gone ({who})", reason=INTERRUPTED)
            if settled.state.status == "RUNNING":
                elsewhere.add(tags.get(TRIAL_HASH, ""))
            elif settled.ended_here:
                recovered.append(tags)
        for parent in parents:
            if not alive(parent.data.tags) and self.run_state(parent.info.run_id).status == "RUNNING":
                self.finish(parent.info.run_id, "FAILED", error="this ablate run was killed before it ended",
                            reason=INTERRUPTED)
        return recovered, elsewhere

    def log_checks(self, study: str, results: list) -> list[str]:
        """One run per architecture's sanity checks (ablate.check), role `check`: each check's value as a metric and
        its verdict as a tag, FINISHED when all passed, else FAILED. Readers of trials never see them (no hash)."""
        experiment_id = self.experiment(study)
        run_ids = []
        for stage in results:
            tags = {ROLE: "check", STAGE: stage.stage, SEED: str(stage.seed), MLFLOW_RUN_NAME: f"check-{stage.stage}"}
            tags |= {f"check.{_metric_name(c.name)}": {True: "pass", False: "fail", None: "n/a"}[c.passed]
                     for c in stage.checks}
            run_id = self.client.create_run(experiment_id, tags=tags).info.run_id
            for check in stage.checks:
                if check.value == check.value:  # NaN (a diverged run) is not a metric value MLflow keeps
                    self.client.log_metric(run_id, f"check_{_metric_name(check.name)}", check.value)
            self.client.set_terminated(run_id, "FINISHED" if stage.passed else "FAILED")
            run_ids.append(run_id)
        return run_ids

    def running_runs(self, experiment_id: str, parent_id: str, trial_hash: str) -> list[str]:
        """The RUNNING runs of a trial under one invocation (the children of its parent run)."""
        found = self.search(experiment_id, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}' and "
                                           f"tags.`{TRIAL_HASH}` = '{trial_hash}' and attributes.status = 'RUNNING'")
        return [run.info.run_id for run in found]

    def end_left_running(self, experiment_id: str, parent_id: str, status: str, error: str, reason: str) -> list[str]:
        """End `status` the runs of one invocation (the children of its parent run) still RUNNING; their ids.

        For the invocation itself, once none of its workers can write any more: a worker stopped at an awkward
        moment (Ctrl-C just after it created a trial's run, before anyone heard of it) leaves its run RUNNING.
        Each is settled (a committed trial's run is completed, not ended); a run that ended stays as it ended."""
        ended = []
        children = self.search(experiment_id, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}' and "
                                              "attributes.status = 'RUNNING'")
        for run in children:
            if self.settle(run.info.run_id, status, error=error, reason=reason, force=True).ended_here:
                ended.append(run.info.run_id)
        return ended

    def log_dict(self, run_id: str, document: dict, artifact: str) -> None:
        self.client.log_dict(run_id, document, artifact)


def environment_tags(folder: Path) -> dict[str, str]:
    """Where and with what a run happened: versions, who runs it (host, pid, start), git commit of the study's tree."""
    tags = {
        "ablate_version": ablate.__version__,
        "torch_version": torch_version(),
        "python_version": platform.python_version(),
        **Identity.of_this_process().tags(),
    }
    commit = git_commit(folder)
    if commit:
        tags["git_commit"] = commit
        tags[MLFLOW_GIT_COMMIT] = commit.removesuffix("+dirty")
    return tags


_TORCH_VERSION = re.compile(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)


def torch_version() -> str:
    """torch.__version__ (a CUDA build's with its suffix, e.g. 2.5.1+cu124, which the package's metadata leaves off),
    read from torch/version.py without importing torch: a CPU run's parent never needs torch itself, and importing
    it takes a second or more."""
    import importlib.util
    import sys

    if "torch" not in sys.modules:
        spec = importlib.util.find_spec("torch")
        if spec is not None and spec.submodule_search_locations:
            try:
                found = _TORCH_VERSION.search((Path(spec.submodule_search_locations[0]) / "version.py").read_text())
            except OSError:
                found = None
            if found:
                return found.group(1)
    import torch

    return torch.__version__


def read_plan(tracker: Tracker, run_id: str) -> dict | None:
    """The plan a parent run carries, or None when it has none (a run not made by ablate run)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.client.download_artifacts(run_id, PLAN_ARTIFACT, dst_path=tmp)
        except StoreError:  # the store failed (locked, full, unreachable): said so, not taken for "no plan"
            raise
        except Exception:  # MLflow raises several types for a missing artifact
            return None
        return json.loads(Path(path).read_text())


def parent_runs(tracker: Tracker, experiment_id: str) -> list:
    """The study's invocations (parent runs), newest first."""
    return sorted(tracker.search(experiment_id, f"tags.{ROLE} = 'parent'"), key=lambda r: r.info.start_time or 0,
                  reverse=True)


def latest_plan(tracker: Tracker, parents: list) -> dict | None:
    """The plan of the newest of `parents` (newest first) that carries one: the study as the report shows it, and
    what a run compares its own plan with."""
    return next((plan for plan in (read_plan(tracker, r.info.run_id) for r in parents) if plan), None)


def _metric_name(check: str) -> str:
    """'overfit 128 examples' → 'overfit_128_examples'."""
    return re.sub(r"[^a-z0-9]+", "_", check.lower()).strip("_")
