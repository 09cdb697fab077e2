"""Run a study's trials: skip finished ones, train the rest, record every outcome.

The per-trial work (`run_trial`) takes only picklable inputs and an explicit run id, so
the same function can run in this process, in a worker process, or on another machine.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from ablate import data as datasets
from ablate.design import Trial
from ablate.errors import AblateError
from ablate.spec import Study
from ablate.tracking import PLAN_ARTIFACT, Tracker, environment_tags
from ablate.train import TrialResult, train_trial

class Reporter(Protocol):
    """What a run tells its user; the CLI draws it, tests can record it."""

    def start(self, total: int, skipped: int, device: str) -> None: ...
    def trial_started(self, trial: Trial) -> None: ...
    def epoch(self, trial: Trial, epoch: int, metrics: dict[str, float]) -> None: ...
    def trial_finished(self, trial: Trial, result: TrialResult) -> None: ...
    def trial_failed(self, trial: Trial, error: str) -> None: ...


@dataclass
class RunSummary:
    experiment_id: str
    parent_run_id: str | None
    total: int
    skipped: int
    finished: list[tuple[Trial, TrialResult]] = field(default_factory=list)
    failed: list[tuple[Trial, str]] = field(default_factory=list)
    interrupted: bool = False
    wall_seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AblateError(f"--device {name}: no CUDA device is visible here; use 'cpu' or 'auto'")
    return device


def hardware(device: torch.device) -> str:
    """The processor a run used, as a results table should name it."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def plan_document(study: Study, trials: list[Trial]) -> dict:
    """The study's full trial list, logged on each parent run so reports know the current design."""
    stages = {}
    for t in trials:
        stage = study.stages[t.stage_index]
        stages.setdefault(
            t.stage,
            {
                "name": t.stage,
                "index": t.stage_index,
                "description": stage.description,
                "reference": stage.reference,
                "changes": t.changes,
                "architecture": t.architecture,
                "params_count": t.params_count,
            },
        )
    return {
        "study": study.name,
        "design": study.info.design,
        "description": study.info.description,
        "stages": list(stages.values()),
        "trials": [{"hash": t.hash, "stage": t.stage, "seed": t.seed} for t in trials],
    }


def run_trial(
    trial: Trial, tracker: Tracker, experiment_id: str, parent_id: str, env_tags: dict[str, str],
    data_dir: Path, device: torch.device, reporter: Reporter,
) -> TrialResult:
    """Train one trial into its own MLflow run; a Python error marks the run FAILED and is re-raised."""
    run_id = tracker.start_trial(experiment_id, parent_id, trial, env_tags)
    reporter.trial_started(trial)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(run_id, metrics, step=epoch)
        reporter.epoch(trial, epoch, metrics)

    try:
        dataset = datasets.load(trial.settings.dataset, trial.settings.data, data_dir, device)
        result = train_trial(trial.settings, dataset, device, on_epoch)
    except KeyboardInterrupt:
        tracker.finish(run_id, "KILLED", error="interrupted (Ctrl-C)")
        raise
    except Exception as exc:
        tracker.client.log_text(run_id, traceback.format_exc(), "traceback.txt")
        tracker.finish(run_id, "FAILED", error=f"{type(exc).__name__}: {exc}")
        raise
    tracker.log_metrics(run_id, result.final_metrics(), step=len(result.history))
    tracker.finish(run_id)
    return result


def run_study(
    study: Study, trials: list[Trial], tracker: Tracker, data_dir: Path, device_name: str, reporter: Reporter,
    command: str = "",
) -> RunSummary:
    started = time.perf_counter()
    device = resolve_device(device_name)
    experiment_id = tracker.experiment(study.name)
    done = tracker.finished_hashes(experiment_id)
    todo = [t for t in trials if t.hash not in done]
    summary = RunSummary(experiment_id, None, total=len(trials), skipped=len(trials) - len(todo))
    reporter.start(len(trials), summary.skipped, str(device))
    if not todo:
        return summary
    # Load every dataset the trials need first: a missing file stops the run before any run is recorded.
    for settings in {(t.settings.dataset, t.settings.data) for t in todo}:
        datasets.load(*settings, data_dir, device)
    env_tags = {**environment_tags(Path(study.path).resolve().parent), "device": str(device), "hardware": hardware(device)}
    parent_id = tracker.start_parent(
        experiment_id, study.name, Path(study.path), len(trials), {**env_tags, "command": command}
    )
    summary.parent_run_id = parent_id
    tracker.client.log_dict(parent_id, plan_document(study, trials), PLAN_ARTIFACT)
    try:
        for trial in todo:
            try:
                result = run_trial(trial, tracker, experiment_id, parent_id, env_tags, data_dir, device, reporter)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a bad trial is recorded and the study goes on
                summary.failed.append((trial, f"{type(exc).__name__}: {exc}"))
                reporter.trial_failed(trial, summary.failed[-1][1])
                continue
            summary.finished.append((trial, result))
            reporter.trial_finished(trial, result)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.wall_seconds = time.perf_counter() - started
    _close_parent(tracker, summary)
    return summary


def _close_parent(tracker: Tracker, summary: RunSummary) -> None:
    counts = {
        "trials_finished": str(len(summary.finished)),
        "trials_failed": str(len(summary.failed)),
        "trials_skipped": str(summary.skipped),
        "wall_seconds": f"{summary.wall_seconds:.1f}",
    }
    for key, value in counts.items():
        tracker.client.set_tag(summary.parent_run_id, key, value)
    status = "KILLED" if summary.interrupted else ("FAILED" if summary.failed else "FINISHED")
    tracker.finish(summary.parent_run_id, status)
