"""Per arm: the primary metric's mean, spread, interval and paired difference from the baseline arm."""

from __future__ import annotations

import math

import pandas as pd

from ablate.report import _stats as stats
from ablate.report._judge import Judging, judge
from ablate.report._report import scaled


def summarise(runs: pd.DataFrame, stages: list[dict], baseline: int = 0, metric: str = "test_accuracy",
              judging: Judging | None = None) -> pd.DataFrame:
    """Per arm: the primary metric's mean, std, n and 95% t-interval; its paired difference from the baseline arm
    (seed by seed), the paired t-test's p-value and Holm's correction over the arms, and its verdict (_judge); means
    of the rest."""
    runs = runs.copy()
    # The validation accuracy of the weights that were tested (the best epoch's when early stopping restored them);
    # runs logged before that metric existed tested their last epoch.
    runs["val_accuracy"] = runs["tested_val_accuracy"].fillna(runs["val_accuracy"])
    runs["throughput"] = runs["epochs_run"] * runs["train_size"] / runs["train_seconds"]
    by_arm = {stage["name"]: runs[runs["stage"] == stage["name"]] for stage in stages}
    reference = None
    if stages:
        base = by_arm[stages[baseline]["name"]]
        reference = scaled(base.set_index("seed")[metric], metric)
    rows = []
    for index, stage in enumerate(stages):
        group = by_arm[stage["name"]]
        values = scaled(group[metric], metric)
        low, high = stats.mean_interval(values)
        delta, p_value, pairs = (math.nan, math.nan, 0) if index == baseline else stats.paired_difference(
            scaled(group.set_index("seed")[metric], metric), reference)
        rows.append(
            {
                "stage": stage["name"],
                "changes": stage.get("changes", ""),
                "architecture": stage.get("architecture", ""),
                "params_count": stage.get("params_count", group["params_count"].max()),
                "macs": stage.get("macs"),
                "n": len(group),
                # pandas gives NaN for the mean of no runs and the std of fewer than two
                f"{metric}_mean": values.mean(),
                f"{metric}_std": values.std(ddof=1),
                "ci_low": low,
                "ci_high": high,
                "delta_vs_baseline": delta,
                "pairs": pairs,
                "p_value": p_value,
                "test_accuracy_mean": (group["test_accuracy"] * 100).mean(),
                "val_accuracy_mean": (group["val_accuracy"] * 100).mean(),
                "epochs_run_mean": group["epochs_run"].mean(),
                "tested_epoch_mean": group["tested_epoch"].mean(),
                "test_loss_mean": group["test_loss"].mean(),
                "train_seconds_mean": group["train_seconds"].mean(),
                "throughput_mean": group["throughput"].mean(),
                "peak_memory_mb_mean": group["peak_memory_mb"].mean(),
                "reference": stage.get("reference"),
                "loss": _loss_of(group),
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = stats.holm(list(table["p_value"]))
        table["significant"] = table["p_holm"] < stats.ALPHA
        scores = {stage["name"]: scaled(by_arm[stage["name"]].set_index("seed")[metric], metric) for stage in stages}
        judge(table, scores, baseline, metric, judging or Judging())
    return table


def _loss_of(group: pd.DataFrame) -> str:
    """The training loss of an arm's runs (its test loss is measured in it): losses of different kinds are never
    ranked against each other."""
    column = "param:train.loss"
    if column not in group or not group[column].notna().any():
        return "cross_entropy"  # the default, and all a run logged before the parameter existed could have used
    return str(group[column].dropna().iloc[0])
