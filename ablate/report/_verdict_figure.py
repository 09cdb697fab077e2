"""The figure a verdict rests on: each arm's paired difference from the baseline with the intervals the verdict reads,
against the shaded band ±δ. An arm's own interval (the per-arm figure) hides how sure a paired difference is — two
arms whose intervals overlap may still differ clearly seed for seed — so this draws the intervals of the difference
itself, at the level the verdict was decided at (Student-t at Holm's level for fixed seeds, the repeated intervals for
adaptive ones): a thin whisker, the difference interval (better or worse when it excludes 0), and over it a thick bar,
the equivalence interval (equivalent when it lies inside the band) — a TOST's (1 − 2α) interval, so usually the
narrower one, though Holm may test the two at different levels.
When one large difference would squeeze the band to a hairline, the axis is linear within a few δ of 0 and
logarithmic beyond (symlog), so a small difference's bar and the band stay readable beside it."""

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
    figure, axes = plt.subplots(figsize=(8, max(3.2, 0.35 * len(judged) + 1.9)))
    positions = np.arange(len(judged))[::-1]
    axes.axvspan(-margin, margin, color="#4c72b0", alpha=0.12, label=f"±δ = ±{margin:g}{unit} ([stats] margin)")
    axes.axvline(0, color="grey", linewidth=1)
    for position, (_, row) in zip(positions, judged.iterrows()):
        mean = row["delta_vs_baseline"]
        colour = COLOURS.get(row["verdict"], "black")
        axes.errorbar(mean, position, xerr=[[mean - row["diff_low"]], [row["diff_high"] - mean]], fmt="o",
                      color=colour, ecolor=colour, capsize=3, markersize=5, linewidth=1)
        if pd.notna(row.get("equiv_low")):
            axes.plot([row["equiv_low"], row["equiv_high"]], [position, position], color=colour, linewidth=6,
                      alpha=0.45, solid_capstyle="butt")
        right = np.nanmax([row["diff_high"], row.get("equiv_high", np.nan), mean])
        axes.annotate(_label(row), (right, position), xytext=(6, 0),
                      textcoords="offset points", va="center", fontsize=8, color=colour)
    _legend_keys(axes)
    axes.set_yticks(positions, judged["stage"], fontsize=7 if len(judged) > 12 else 9)
    axes.set_ylim(-0.8, len(judged) - 0.2)
    _scale(axes, judged, margin)
    how = "repeated intervals, adaptive seeds" if report.judging.adaptive else "intervals at Holm's level"
    axes.set_xlabel(f"{PRIMARY_METRICS[report.metric]}: difference from {base}{unit}, paired over seeds ({how})",
                    fontsize=9)
    axes.set_title(f"{report.name}: verdicts against {base}", pad=24)
    # Above the axes, not inside: no row's bar is hidden under it, however the arms fall.
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=7, frameon=False)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _legend_keys(axes) -> None:
    """Legend entries for the two intervals (drawn in grey: each arm's colour is its verdict's)."""
    axes.plot([], [], color="#555555", marker="|", markersize=8, linewidth=1,
              label="difference interval: better/worse if it excludes 0")
    axes.plot([], [], color="#555555", linewidth=6, alpha=0.45, solid_capstyle="butt",
              label="equivalence interval: equivalent if inside ±δ")


def _scale(axes, judged: pd.DataFrame, margin: float) -> None:
    """Linear around 0 unless the widest interval reaches beyond 20δ: then symlog, linear within ±2δ, so that the
    band and the small differences stay readable beside a large one."""
    low, high = float(np.nanmin(judged["diff_low"])), float(np.nanmax(judged["diff_high"]))
    if max(-low, high) > 20 * margin:
        axes.set_xscale("symlog", linthresh=2 * margin)
        axes.set_xlim(min(low, -2 * margin) * 1.5, max(high, 2 * margin) * 4)  # room on the right for the labels
    else:
        axes.margins(x=0.25)


def _label(row: pd.Series) -> str:
    pairs = "" if pd.isna(row["verdict_pairs"]) else f", n = {int(row['verdict_pairs'])}"
    needed = row.get("seeds_needed")
    more = f" (~{int(needed)} seeds)" if row["verdict"] == "undecided" and pd.notna(needed) else ""
    return f"{row['verdict']}{pairs}{more}"
