"""A study's report as data: the per-arm table, the runs behind it, and what the renderers and figures need."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablate.report._judge import Judging

# The metrics read from every trial run.
METRICS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "tested_val_accuracy", "train_seconds",
           "params_count", "epochs_run", "tested_epoch", "peak_memory_mb")
# Heading of the column that says what an arm changes, by design: what each arm is compared with.
CHANGES_HEADING = {"ladder": "Changes (vs previous stage)", "ablation": "Changes (vs baseline)",
                   "search": "Search result (validation, seed of the search)"}
# Metrics a report can rank by; accuracies are shown in percent. Lower is better for losses.
PRIMARY_METRICS = {"test_accuracy": "Test acc (%)", "val_accuracy": "Val acc (%)", "test_loss": "Test loss",
                   "val_loss": "Val loss"}


def fmt(value: float, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def scaled(values: pd.Series, metric: str) -> pd.Series:
    return values * 100 if metric.endswith("accuracy") else values


@dataclass
class StudyReport:
    name: str
    description: str
    design: str
    dataset: str | None  # what the trials trained on (its images, shape and class names); None: no runs yet
    table: pd.DataFrame  # one row per stage, numeric
    runs: pd.DataFrame  # the finished runs the table is computed from, one per trial
    planned: int  # trials in the latest spec
    excluded: dict[str, int] = field(default_factory=dict)  # status → runs left out
    invocations: list[dict[str, str]] = field(default_factory=list)
    search: dict | None = None  # a search study: its Optuna trials, importances and history figure
    metric: str = "test_accuracy"  # the primary metric of the statistics
    baseline: int = 0  # the row deltas are taken against
    parent_run_id: str | None = None  # the latest invocation's parent run: where figures are logged
    baseline_named: bool = False  # the baseline was named (spec or --baseline), not taken as the first arm
    figures: list[Path] = field(default_factory=list)  # PNGs written for the markdown to link
    not_drawn: list[tuple[str, str]] = field(default_factory=list)  # (figure, why) for each figure it could not draw
    data_dir: str | None = None  # the data folder the latest invocation that recorded one read (ablate run's)
    import_paths: tuple[str, ...] = ()  # the folders that invocation imported the study's factories from
    models: dict[str, str] = field(default_factory=dict)  # arm → the run whose saved model stands for it
    class_names: tuple[str, ...] = ()  # the dataset's, when the figures read it
    per_class: pd.DataFrame | None = None  # arms × classes test accuracy (a fraction), when the figures computed it
    judging: Judging = field(default_factory=Judging)  # how the table's verdicts were reached ([stats], adaptive)
    described: dict[str, str] = field(default_factory=dict)  # arm → the description the study file gives it, if any
