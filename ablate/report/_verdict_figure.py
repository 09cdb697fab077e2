"""The figure a verdict rests on: each arm's paired difference from the baseline with its interval, against the
shaded band ±δ. An arm's own interval (the per-arm figure) hides how sure a paired difference is — two arms whose
intervals overlap may still differ clearly seed for seed — so this draws the interval of the difference itself:
the one the verdict reads (Student-t for fixed seeds, the repeated interval for adaptive ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ablate.report._report import PRIMARY_METRICS, StudyReport

COLOURS = {"better": "#2a9d4b", "worse": "#c0392b", "equivalent": "#4c72b0", "undecided": "#7f7f7f"}


def verdict_figure(report: StudyReport, path: Path, plt) -> bool:
    """Draw it to `path`; False (nothing drawn) when no arm has a verdict yet."""
    table = report.table
    if "verdict" not in table:
        return False
    judged = table[table["verdict"].notna() & table["diff_low"].notna()]
    if judged.empty:
        return False
    margin, unit = report.judging.margin, " (pts)" if report.metric.endswith("accuracy") else ""
    base = table["stage"].iloc[report.baseline]
    figure, axes = plt.subplots(figsize=(8, max(3, 0.35 * len(judged) + 1.6)))
    positions = np.arange(len(judged))[::-1]
    axes.axvspan(-margin, margin, color="#4c72b0", alpha=0.12, label=f"±δ = ±{margin:g}{unit} ([stats] margin)")
    axes.axvline(0, color="grey", linewidth=1)
    for position, (_, row) in zip(positions, judged.iterrows()):
        mean = row["delta_vs_baseline"]
        colour = COLOURS.get(row["verdict"], "black")
        axes.errorbar(mean, position, xerr=[[mean - row["diff_low"]], [row["diff_high"] - mean]], fmt="o",
                      color=colour, ecolor=colour, capsize=3, markersize=5)
        axes.annotate(_label(row), (row["diff_high"], position), xytext=(6, 0), textcoords="offset points",
                      va="center", fontsize=8, color=colour)
    axes.set_yticks(positions, judged["stage"], fontsize=7 if len(judged) > 12 else 9)
    axes.set_ylim(-0.8, len(judged) - 0.2)
    axes.margins(x=0.25)
    how = "repeated interval (adaptive seeds)" if report.judging.adaptive else "95% interval"
    axes.set_xlabel(f"{PRIMARY_METRICS[report.metric]}: difference from {base}{unit}, paired over seeds "
                    f"(dot: mean; whiskers: {how})")
    axes.set_title(f"{report.name}: verdicts against {base}")
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _label(row: pd.Series) -> str:
    pairs = "" if pd.isna(row["verdict_pairs"]) else f", n = {int(row['verdict_pairs'])}"
    return f"{row['verdict']}{pairs}"
