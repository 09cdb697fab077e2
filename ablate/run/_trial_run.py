"""A trial's run: one trial's MLflow run as the worker that trains it keeps it, from its claim to its end.

Owns claiming the trial (or finding it another invocation's: `Elsewhere`), its run's tags, epochs and heartbeat
membership, and every way the run ends: finished (test outputs, saved models, then the claim's commit), failed,
interrupted, or lost to a takeover. The worker (ablate.run._worker) decides when; this module records it.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ablate import datasets
from ablate.design import Trial
from ablate.errors import StoreError
from ablate.run._events import Epoch, Failed, Finished, Outcome, Skipped, Started
from ablate.run._faults import Orphaned, classify, inject
from ablate.tracking import INTERRUPTED, OUTPUTS_ARTIFACT, Lease

if TYPE_CHECKING:
    from ablate.engine import TrialResult
    from ablate.run._worker import Worker


class Elsewhere(Exception):
    """The trial's claim failed: another invocation finished it or is training it."""

    def __init__(self, elsewhere: str):
        super().__init__(elsewhere)
        self.elsewhere = elsewhere


class TrialRun:
    """One trial's MLflow run as its worker keeps it: started with the trial's tags, fed its epochs, ended once."""

    def __init__(self, worker: Worker, trial: Trial, key: str, role: str = "trial", **tags: str):
        self.worker, self.trial, self.key = worker, trial, key
        self.tracker = worker.tracker
        self.searched = role == "search"  # an Optuna trial's run: its end also says how Optuna saw it
        self.fault = worker.config.faults.get(f"{trial.stage}:{trial.seed}")
        self.settings = trial.settings
        if self.fault == "nan":  # an infinite learning rate: the loss is NaN within a few steps
            self.settings = replace(self.settings, train=replace(self.settings.train, lr=math.inf))
        slot, config = worker.slot, worker.config
        run_tags = {**config.env_tags, **worker.tags, **tags}
        self.lease: Lease | None = None  # a search trial's claim is its Optuna trial
        self.logged = False  # whether this run logged MLflow models (_keep_models)
        self.dataset: tuple[str, str] | None = None  # its dataset input's name and digest (_log_dataset)
        if self.searched:  # Optuna gave this point to this worker alone
            self.run_id = self.tracker.start_trial(config.experiment_id, config.parent_run_id, trial, run_tags,
                                                   role=role)
        else:
            claim = self.tracker.claim_trial(config.experiment_id, config.parent_run_id, trial, run_tags,
                                             config.parent)
            if claim.run_id is None:
                raise Elsewhere(claim.elsewhere)
            self.run_id, self.lease = claim.run_id, claim.lease
            worker.leases[self.run_id] = claim.lease
        worker.open_runs.add(self.run_id)
        self._log_dataset()
        worker.emit(Started(slot.index, key, trial, self.run_id))

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.tracker.log_metrics(self.run_id, metrics, step=epoch)
        self.worker.emit(Epoch(self.worker.slot.index, self.key, self.trial.hash, epoch, metrics["val_accuracy"]))
        if self.worker.orphaned():
            raise Orphaned()
        inject(self.fault, epoch, self.worker.die, self.worker.config.faults)

    def finished(self, result: TrialResult) -> None:
        """A trained and tested trial: its test outputs and models, then the commit of its claim, which records its
        final metrics and FINISHED — unless the claim was taken over meanwhile (this worker was taken for gone):
        then the trial is the new holder's, and this run ends FAILED without them."""
        metrics = {**result.final_metrics(), "peak_memory_mb": self.worker.peak_memory_mb()}
        self._log_outputs(result)
        model_id = self._keep_models(result)
        self._forget()
        if not self.tracker.commit_trial(self.lease, self.run_id, metrics, step=len(result.history),
                                         model_id=model_id, dataset=self.dataset):
            self.lost()
            return
        self._emit(Outcome(test_accuracy=result.test_accuracy, train_seconds=result.train_seconds))

    def lost(self) -> None:
        """The claim was taken over: say so on this run (if no one ended it yet) and give the trial up. Its logged
        models go (the new holder logs its own): the Models tab lists the models that stand for trials."""
        from ablate.tracking import delete_logged_models, logged_models

        self._forget()
        if self.logged:
            try:
                delete_logged_models(self.tracker, logged_models(self.tracker, self.worker.config.experiment_id,
                                                                 self.run_id))
            except Exception:  # noqa: BLE001 — a store that cannot delete keeps them: listed, their run FAILED
                pass
        if self.tracker.run_state(self.run_id).status == "RUNNING":
            self.tracker.finish(self.run_id, "FAILED", reason=INTERRUPTED,
                                error="its claim was taken over (this worker was taken for gone); the trial trains "
                                      "under the new claim")
        self.worker.emit(Skipped(self.worker.slot.index, self.key, self.trial.hash, "running"))

    def searched_to_end(self, optuna_state: str, outcome: Outcome) -> None:
        """A search trial Optuna saw COMPLETE or PRUNED: FINISHED (its metrics are the caller's)."""
        self._end("FINISHED", optuna_state)
        self._emit(outcome)

    def failed(self, exc: BaseException, trace: str) -> None:
        reason = classify(exc)
        self.tracker.log_text(self.run_id, trace, "traceback.txt")
        message = f"{type(exc).__name__}: {exc}"
        self._end("FAILED", error=message, reason=reason)
        self.worker.emit(Failed(self.worker.slot.index, self.key, self.trial.hash, reason, message))

    def interrupted(self, killed: bool, reason: str = INTERRUPTED) -> None:
        status = "KILLED" if killed else "FAILED"
        if self.searched:  # as search runs have always recorded it
            error = "interrupted"
        elif not killed:
            error = "the ablate run that started this trial is gone"
        else:
            error = "interrupted (Ctrl-C)" if reason == INTERRUPTED else "preempted (SIGTERM)"
        self._end(status, error=error, reason=reason)

    def _end(self, status: str, optuna_state: str = "FAIL", **why: str) -> None:
        """End the run — unless someone else already did: a dispatcher that lost touch with this worker (a node cut
        off from its cluster, not dead) records the run FAILED worker-lost and has the trial trained again. A trial
        run's claim is given up once its run has ended (not FINISHED: that is commit_trial's)."""
        self._forget()
        if self.tracker.run_state(self.run_id).status == "RUNNING":
            if self.searched:
                self.tracker.set_tag(self.run_id, "optuna_state", optuna_state)
            self.tracker.finish(self.run_id, status, **why)
        if self.lease is not None:
            self.tracker.release(self.lease)

    def _forget(self) -> None:
        """No more heartbeats for this run: it is ending."""
        self.worker.open_runs.discard(self.run_id)
        self.worker.leases.pop(self.run_id, None)

    def _emit(self, outcome: Outcome) -> None:
        self.worker.emit(Finished(self.worker.slot.index, self.key, self.trial.hash, outcome))

    def _keep_models(self, result: TrialResult) -> str | None:
        """The trained network as the run's saved model (and the last epoch's, where early stopping restored an
        earlier one), before the run is FINISHED: a run that is FINISHED and its arm's best always holds its model.
        Returns the id of its logged model (ablate.tracking's models), which the run's final metrics are linked to.
        A model that cannot be saved is said in the run's `model_error` tag; the trial itself stays done."""
        from ablate.engine import deployable, servable
        from ablate.tracking import (
            LAST_MODEL_ARTIFACT,
            MODEL,
            MODEL_ARTIFACT,
            MODEL_ERROR,
            MODEL_SAVED,
            beaten,
            save_model,
        )

        config = self.worker.config
        if config.models == "none" or self.searched or result.model is None:
            return None
        if config.models == "best" and beaten(self.tracker, config.experiment_id, self.trial.stage,
                                              result.test_accuracy):
            return None
        data = self.worker._data(self.settings)
        example = data.test.images[:2].cpu().numpy()
        about = self._about(result, data)
        kept = [(result.model, about, MODEL_ARTIFACT)]
        if result.last_model is not None:
            kept.append((result.last_model, {**about, "weights": f"last epoch ({len(result.history)}), not tested"},
                         LAST_MODEL_ARTIFACT))
        ids = {}
        try:
            for network, described, artifact in kept:
                model = deployable(network, data, result.channels_last)
                self.logged = True  # from here on, a logged model may exist
                ids[artifact] = save_model(self.tracker, self.run_id, model, servable(model, data), example, described,
                                           artifact, step=len(result.history))
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 — e.g. a custom network whose state dict or probe cannot be saved
            self.tracker.set_tag(self.run_id, MODEL_ERROR, f"{type(exc).__name__}: {exc}"[:500])
            return None
        self.tracker.set_tag(self.run_id, MODEL, MODEL_SAVED)
        return ids.get(MODEL_ARTIFACT)

    def _log_dataset(self) -> None:
        """The data the trial runs on, as its run's dataset input (ablate.tracking's dataset_input); loaded here as
        training will load it (once per process)."""
        from ablate.tracking import dataset_input

        config, settings = self.worker.config, self.settings
        data = self.worker.data(settings)
        record = dataset_input(settings.dataset, settings.data, data, config.data_dir)
        self.tracker.log_inputs(self.run_id, [record])
        self.dataset = (record.dataset.name, record.dataset.digest)

    def _about(self, result: TrialResult, data: datasets.DeviceData) -> dict:
        """What a saved model is, for whoever loads it (its ablate.json); with ablate, `ablate.export.rebuild`."""
        trial, dataset = self.trial, datasets.get(self.settings.dataset)

        def plain(value):  # a one-channel dataset's number, or a per-channel (C, 1, 1) tensor
            return value.flatten().tolist() if hasattr(value, "flatten") else value

        return {
            "study": trial.study, "arm": trial.stage, "seed": trial.seed, "trial_hash": trial.hash,
            "run_id": self.run_id, "architecture": trial.architecture,
            "input": f"images as the dataset stores them, shape (N, {', '.join(map(str, dataset.shape))}), "
                     f"{'uint8 0-255' if dataset.pixel_bytes == 1 else 'float32'}; normalisation is inside the model",
            "output": f"class scores (N, {len(dataset.class_names)}), in the order of class_names",
            "class_names": list(dataset.class_names), "test_accuracy": result.test_accuracy,
            "weights": f"epoch {result.tested_epoch} of {len(result.history)}, tested",
            "normalise": {"mean": plain(data.mean), "std": plain(data.std)}, "channels_last": result.channels_last,
            "settings": trial.settings.to_dict(),
        }

    def _log_outputs(self, result: TrialResult) -> None:
        """Test predictions (and a linear model's weights) as a small artifact, for the report's figures."""
        import numpy as np

        if result.predictions is None:
            return
        arrays = {"predictions": result.predictions, "confidences": result.confidences}
        if result.weights is not None:
            arrays["weights"] = result.weights
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / OUTPUTS_ARTIFACT
            np.savez_compressed(path, **arrays)
            self.tracker.log_artifact(self.run_id, str(path))
