"""The Tracker's trial runs under claims: a trial's run made once its claim is held, committed, or settled by another.

Owns the MLflow side of ablate.tracking._claims' protocol, as the methods `Tracker` inherits from `ClaimedRuns`:
claiming a trial (the lease first, then its run, tagged with the lease's token; a trial FINISHED before claims
existed is adopted as done, and the runs of holders taken over from end FAILED), committing it (the lease's commit
decides, then the run is completed FINISHED), and settling another process's RUNNING run (fenced first: a committed
trial's run is completed instead, a live holder's left alone). Kept apart from the Tracker's plain MLflow calls
(experiments, runs, metrics, artifacts, heartbeats) so that the protocol's side of the Tracker reads as one piece.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from ablate.design import Trial
from ablate.errors import StoreError
from ablate.tracking._claims import Claims, Lease
from ablate.tracking._claims_url import claims_url, scope_of
from ablate.tracking._liveness import Identity
from ablate.tracking._logged import final_metrics
from ablate.tracking._open import signals_held
from ablate.tracking._store import RunState
from ablate.tracking._tags import CLAIM_TOKEN, ERROR, HOST, INTERRUPTED, PID, REASON, ROLE, TRIAL_HASH


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a trial (Tracker.claim_trial): the run to train it in, or why another has it."""

    run_id: str | None  # the claimant's RUNNING run, None when the trial is another's
    elsewhere: str = ""  # "done" (a FINISHED run exists) or "running" (a live invocation trains it)
    lease: Lease | None = None  # the claim itself, which the run's worker commits (Tracker.commit_trial)


@dataclass(frozen=True)
class Settled:
    """A run after Tracker.settle: its state, and whether settle ended it (else its worker did, or still may)."""

    state: RunState
    ended_here: bool = False


class ClaimedRuns:
    """Tracker's methods for trial runs under claims (see the module docstring). They use the Tracker's MLflow
    client and its plain calls (search, start_trial, finish, run_state, run_alive), and the claims state its
    __init__ sets: the claims database's URL (None: derived from the store), the database once opened, the scopes
    read so far."""

    uri: str
    client: MlflowClient
    _claims_url: str | None
    _claims: Claims | None
    _scopes: dict[str, str]

    @property
    def claims(self) -> Claims:
        """The claims database, opened on first use (reports and exports never open it)."""
        if self._claims is None:
            self._claims = Claims(self._claims_url or claims_url(self.uri))
        return self._claims

    def scope(self, experiment_id: str) -> str:
        """The experiment's claims scope (ablate.tracking's claims)."""
        if experiment_id not in self._scopes:
            self._scopes[experiment_id] = scope_of(experiment_id,
                                                   self.client.get_experiment(experiment_id).creation_time)
        return self._scopes[experiment_id]

    def claim_trial(self, experiment_id: str, parent_id: str, trial: Trial, env_tags: dict[str, str],
                    parent: Identity | None = None) -> Claim:
        """Claim a trial before training it, so that it trains once however many invocations run its study.

        The claim is a lease in the claims database, taken by one conditional write (ablate.tracking's claims: the
        protocol and what it assumes); the trial's run is created once it is held, tagged with the lease's token,
        and only the lease's commit (commit_trial) may make it FINISHED. A trial with a FINISHED run from before
        claims existed is done; the runs of holders this claim took over from are ended FAILED (they are fenced:
        their workers can no longer commit). `parent`: the invocation's process, when it is not this one (a
        worker's), so that a worker orphaned by its invocation's death is taken over at once."""
        scope = self.scope(experiment_id)
        claimed = self.claims.acquire(scope, trial.hash, Identity.of_this_process(), parent_id, parent)
        if claimed.lease is None:
            return Claim(None, claimed.elsewhere)
        lease, run_id = claimed.lease, None
        try:
            if self._finished_runs(experiment_id, trial.hash):
                self.claims.adopt(lease)
                return Claim(None, "done")
            self._end_superseded(experiment_id, trial.hash, lease.token)
            with signals_held():  # a Ctrl-C while the run is made lands once run_id names it, here
                run_id = self.start_trial(experiment_id, parent_id, trial, {**env_tags, CLAIM_TOKEN: str(lease.token)})
            self.claims.attach(lease, run_id)
        except BaseException:  # interrupted, or the store failed: the claim never happened
            if run_id is not None:
                self._withdraw(run_id)
            with contextlib.suppress(StoreError):  # else its holder (this process) is gone soon, and so is the claim
                self.claims.release(lease)
            raise
        return Claim(run_id, lease=lease)

    def commit_trial(self, lease: Lease, run_id: str, metrics: dict[str, float], step: int,
                     model_id: str | None = None, dataset: tuple[str, str] | None = None) -> bool:
        """End a trained trial's run FINISHED with its final metrics — if its claim is still this worker's: the
        commit (one conditional write that stores the metrics too) decides; False when the claim was taken over.
        `model_id`: the run's logged model, which the metrics are linked to as well; `dataset`: the name and digest of
        the run's dataset input, which those measured on it are linked to (ablate.tracking's _logged)."""
        result = {"metrics": metrics, "step": step, "timestamp": int(time.time() * 1000)}
        if model_id is not None:
            result["model_id"], result["dataset"] = model_id, dataset
        if not self.claims.commit(lease, run_id, result):
            return False
        self._complete(run_id, result)
        self.claims.recorded(lease)
        return True

    def _complete(self, run_id: str, result: dict) -> None:
        """A committed trial's run, recorded: its final metrics (the commit's timestamps, so writing them twice adds
        nothing), also as its logged model's where the commit names one, and FINISHED."""
        dataset = result.get("dataset")
        metrics = final_metrics(result["metrics"], result["timestamp"], result["step"], result.get("model_id"),
                                tuple(dataset) if dataset else None)
        self.client.log_batch(run_id, metrics=metrics)
        self.client.set_terminated(run_id, status="FINISHED")

    def release(self, lease: Lease) -> None:
        self.claims.release(lease)

    def renew(self, leases: list[Lease]) -> list[Lease]:
        """Each lease's heartbeat; the leases this worker no longer holds."""
        return self.claims.renew(leases) if leases else []

    def settle(self, run_id: str, status: str, error: str | None = None, reason: str | None = None,
               force: bool = False) -> Settled:
        """End another process's RUNNING run `status` — once its worker can no longer finish it. A trial run's claim
        is fenced first (ablate.tracking's claims): a run whose trial was committed is completed FINISHED instead,
        and one whose holder lives is left alone. `force`: the caller knows the worker is gone (it saw it die); else
        its liveness decides. A run without a claim (written before claims, or a search trial's, which Optuna
        claims) is judged by its heartbeat and its invocation's."""
        run = self.client.get_run(run_id)
        state = RunState(run.info.status, dict(run.data.metrics), dict(run.data.tags))
        if state.status != "RUNNING":
            return Settled(state)
        token, trial_hash = state.tags.get(CLAIM_TOKEN), state.tags.get(TRIAL_HASH)
        outcome = "unclaimed"
        if token and trial_hash:
            scope = self.scope(run.info.experiment_id)
            fence = self.claims.fence(scope, trial_hash, int(token), force)
            outcome = fence.outcome
            if outcome == "committed":
                self._complete(run_id, fence.result or {})
                self.claims.recorded(Lease(scope, trial_hash, int(token)))
                return Settled(self.run_state(run_id))
        if outcome in ("live", "finished") or (outcome == "unclaimed" and not force and self.run_alive(run_id)):
            return Settled(state)
        self.finish(run_id, status, error=error, reason=reason)
        tags = {**state.tags, **({ERROR: error[:5000]} if error else {}), **({REASON: reason} if reason else {})}
        return Settled(RunState(status, state.metrics, tags), ended_here=True)

    def _finished_runs(self, experiment_id: str, trial_hash: str) -> list:
        return self.search(experiment_id, f"tags.{ROLE} = 'trial' and tags.{TRIAL_HASH} = '{trial_hash}' and "
                                          "attributes.status = 'FINISHED'")

    def _end_superseded(self, experiment_id: str, trial_hash: str, token: int) -> None:
        """The RUNNING runs of a trial started under an older claim than `token`: their workers can no longer commit
        (their token is not the row's), so they end FAILED (interrupted) rather than wait for recovery."""
        runs = self.search(experiment_id, f"tags.{ROLE} = 'trial' and tags.{TRIAL_HASH} = '{trial_hash}' and "
                                          "attributes.status = 'RUNNING'")
        for run in runs:
            tags = run.data.tags
            if tags.get(CLAIM_TOKEN, "").isdigit() and int(tags[CLAIM_TOKEN]) < token:
                self.finish(run.info.run_id, "FAILED", reason=INTERRUPTED,
                            error=f"its claim was taken over: the ablate run that held it is gone (pid "
                                  f"{tags.get(PID, '?')} on {tags.get(HOST, '?')})")

    def _withdraw(self, run_id: str) -> None:
        try:
            self.client.delete_run(run_id)
        except StoreError:
            pass  # left RUNNING under a claim it never held: fenced, the next invocation ends it
