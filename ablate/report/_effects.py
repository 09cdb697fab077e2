"""Grids: each axis's main effect (its values' means over every other axis and seed) and two-axis interactions."""

from __future__ import annotations

import pandas as pd

from ablate import models
from ablate.errors import AblateError, did_you_mean
from ablate.report._report import PRIMARY_METRICS, StudyReport, fmt, scaled

TABLES = tuple(f"param:{key}" for key in models.TABLE_SETTINGS)  # conv blocks, a custom model's kwargs: no axes


def axes_of(report: StudyReport) -> list[str]:
    """The settings that vary between the runs and are set in every run: a grid's axes (seed aside)."""
    params = [c for c in report.runs.columns if c.startswith("param:") and c != "param:seed"]
    found = []
    for column in params:
        values = report.runs[column]
        if values.notna().all() and values.nunique() > 1 and not column.startswith(TABLES):
            found.append(column.removeprefix("param:"))
    return found


def marginal_table(report: StudyReport, axis: str) -> pd.DataFrame:
    """Main effect of one axis: the primary metric's mean over every other axis and seed, per value."""
    runs, metric = report.runs, report.metric
    values = scaled(runs[metric], metric)
    grouped = values.groupby(runs[f"param:{axis}"])
    frame = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "runs": grouped.size()})
    return frame.reset_index().rename(columns={f"param:{axis}": axis})


def interaction_table(report: StudyReport, first: str, second: str) -> pd.DataFrame:
    runs = report.runs
    for axis in (first, second):
        if f"param:{axis}" not in runs.columns:
            raise AblateError(f"--by {axis}: no such setting in study "
                              f"'{report.name}'{did_you_mean(axis, axes_of(report))}")
    values = scaled(runs[report.metric], report.metric)
    return values.groupby([runs[f"param:{first}"], runs[f"param:{second}"]]).mean().unstack()


def effect_lines(report: StudyReport, by: list[str] | None) -> list[str]:
    digits = 2 if report.metric.endswith("accuracy") else 4
    label = PRIMARY_METRICS[report.metric]
    lines = []
    axes = axes_of(report) if report.design == "grid" else []
    if axes:
        lines += [f"### Main effects ({label}: mean over every other axis and seed)", ""]
        for axis in axes:
            frame = marginal_table(report, axis)
            shown = pd.DataFrame({axis: frame[axis], label: [f"{m:.{digits}f} ± {sd:.{digits}f}" for m, sd in
                                                             zip(frame["mean"], frame["std"])], "runs": frame["runs"]})
            lines += [shown.to_markdown(index=False, disable_numparse=True), ""]
    if by:
        if len(by) != 2:
            raise AblateError("--by takes two settings, e.g. --by model.dropout,model.batchnorm")
        table = interaction_table(report, *by)
        shown = table.map(lambda v: fmt(v, digits))
        shown.index.name = f"{by[0]} \\ {by[1]}"
        lines += [f"### Interaction of {by[0]} and {by[1]} ({label}, mean over the rest)", "",
                  shown.reset_index().to_markdown(index=False, disable_numparse=True), ""]
    return lines

