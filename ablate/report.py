"""MLflow runs → pandas → per-stage statistics → markdown, CSV or JSON.

The report shows the design of the latest `ablate run` of a study (its plan.json): runs of
trials no longer in the spec are left out, and when a trial ran more than once the latest
finished run counts. Summary values are explicit: test metrics are measured once after
the last epoch; validation accuracy is the final epoch's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd

from ablate import stats
from ablate.errors import AblateError, did_you_mean
from ablate.tracking import EXPERIMENT_TAG, ROLE, SEED, STAGE, STAGE_INDEX, TRIAL_HASH, Tracker, read_plan, sqlite_path

METRICS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "tested_val_accuracy", "train_seconds",
           "params_count", "epochs_run", "tested_epoch", "peak_memory_mb")
TRAIN_SIZE = {"mnist": 60_000}
# Heading of the column that says what an arm changes, by design: what each arm is compared with.
CHANGES_HEADING = {"ladder": "Changes (vs previous stage)", "ablation": "Changes (vs baseline)",
                   "search": "Search result (validation, seed of the search)"}


@dataclass
class StudyReport:
    name: str
    description: str
    design: str
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
    figures: list = field(default_factory=list)  # PNGs written for the markdown to link


def _check_store(uri: str) -> None:
    """Refuse to read a SQLite store that does not exist (MLflow would silently create it)."""
    path = sqlite_path(uri)
    if path is not None:
        if not path.exists():
            raise AblateError(
                f"no MLflow store at {path} (tracking URI {uri}); run `ablate run STUDY.toml` first, "
                "or pass --tracking-uri"
            )


def study_names(tracker: Tracker) -> list[str]:
    experiments = tracker.client.search_experiments(max_results=10_000)
    return sorted(e.name for e in experiments if EXPERIMENT_TAG in e.tags)


def _run_rows(runs) -> pd.DataFrame:
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        row = {
            "run_id": run.info.run_id,
            "parent_run_id": tags.get("mlflow.parentRunId"),
            "status": run.info.status,
            "start_time": run.info.start_time,
            "trial_hash": tags.get(TRIAL_HASH),
            "stage": tags.get(STAGE),
            "stage_index": int(tags.get(STAGE_INDEX, 0)),
            "seed": int(tags.get(SEED, 0)),
            "pack_size": int(tags.get("pack_size", 1)),
        }
        row.update({m: metrics.get(m, math.nan) for m in METRICS})
        row["train_size"] = _train_size(run.data.params)
        row.update({f"param:{k}": v for k, v in run.data.params.items()})
        rows.append(row)
    columns = ["run_id", "parent_run_id", "status", "start_time", "trial_hash", "stage", "stage_index", "seed",
               "pack_size", *METRICS, "train_size"]
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=columns + sorted(c for c in frame.columns if c.startswith("param:")))


def _train_size(params: dict[str, str]) -> float:
    """Training examples per epoch, from the run's params (the split is part of the settings)."""
    limit = params.get("data.train_limit", "none")
    if limit not in ("none", ""):
        return float(limit)
    total = TRAIN_SIZE.get(params.get("dataset", "mnist"), math.nan)
    return total - float(params.get("data.val_size", "nan"))


def load_study(
    tracker: Tracker, study: str, figures: Path | None = None, baseline: str | None = None,
    metric: str = "test_accuracy",
) -> StudyReport:
    experiment = tracker.client.get_experiment_by_name(study)
    if experiment is None or EXPERIMENT_TAG not in experiment.tags:
        known = study_names(tracker)
        raise AblateError(
            f"no study named '{study}' in {tracker.uri}{did_you_mean(study, known)}; "
            f"studies there: {', '.join(known) or 'none'}"
        )
    exp_id = experiment.experiment_id
    parents = sorted(tracker.search(exp_id, f"tags.{ROLE} = 'parent'"), key=lambda r: r.info.start_time, reverse=True)
    plan = next((p for p in (read_plan(tracker, r.info.run_id) for r in parents) if p), None)
    runs = _run_rows(tracker.search(exp_id, f"tags.{ROLE} = 'trial'"))
    if plan is not None:
        _fill_macs(tracker, parents, plan)
        stage_of = {t["hash"]: t["stage"] for t in plan["trials"]}
        runs = runs[runs["trial_hash"].isin(stage_of)].copy()
        runs["stage"] = runs["trial_hash"].map(stage_of)  # the latest spec's stage names
        stages = plan["stages"]
    else:
        stages = [{"name": s, "index": i} for s, i in runs.groupby("stage")["stage_index"].min().sort_values().items()]
    finished = runs[runs["status"] == "FINISHED"].sort_values("start_time")
    latest = finished.drop_duplicates("trial_hash", keep="last")
    excluded = runs[runs["status"] != "FINISHED"]["status"].value_counts().to_dict()
    base_index = _baseline_index(stages, baseline or (plan or {}).get("baseline"), study)
    return StudyReport(
        name=study,
        description=(plan or {}).get("description", ""),
        design=(plan or {}).get("design", "ladder"),
        table=summarise(latest, stages, base_index, metric),
        metric=metric,
        baseline=base_index,
        parent_run_id=parents[0].info.run_id if parents else None,
        baseline_named=bool(baseline or (plan or {}).get("baseline")),
        runs=latest.reset_index(drop=True),
        planned=len(plan["trials"]) if plan else len(latest),
        excluded={str(k): int(v) for k, v in excluded.items()},
        # The invocations that trained the runs in the table, not every run of an older design.
        invocations=[_invocation(r) for r in parents if r.info.run_id in set(latest["parent_run_id"])],
        search=_search_summary(plan["search"], figures) if plan and plan.get("search") else None,
    )


def _fill_macs(tracker: Tracker, parents: list, plan: dict) -> None:
    """Plans logged before MACs were recorded: compute them from the study file the same parent run carries."""
    if all("macs" in stage for stage in plan["stages"]) or plan.get("search"):
        return
    import tempfile

    from ablate.design import expand
    from ablate.sizes import macs
    from ablate.spec import DATASETS, load_study

    for parent in parents:
        files = [a.path for a in tracker.client.list_artifacts(parent.info.run_id) if a.path.endswith(".toml")]
        if not files:
            continue
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = tracker.client.download_artifacts(parent.info.run_id, files[0], dst_path=folder)
                by_name = {t.stage: macs(t.settings.model, DATASETS[t.settings.dataset]) for t in expand(load_study(path))}
            except Exception:  # an older schema or a custom model that cannot be imported here: no MACs
                continue
        if all(stage["name"] in by_name for stage in plan["stages"]):
            for stage in plan["stages"]:
                stage["macs"] = by_name[stage["name"]]
            return


def _baseline_index(stages: list[dict], name: str | None, study: str) -> int:
    """The arm deltas are taken against: the first (a ladder's first stage, an ablation's baseline, a grid's first
    point, a search's best) unless named."""
    if name is None:
        return 0
    names = [s["name"] for s in stages]
    if name not in names:
        raise AblateError(f"--baseline {name!r} is not an arm of study '{study}'{did_you_mean(name, names)}; "
                          f"arms: {', '.join(names)}")
    return names.index(name)


# ---------------------------------------------------------------------------- figures


def write_figures(tracker: Tracker, report: StudyReport, folder: Path) -> list[Path]:
    """Validation curves per arm (mean with a min–max band over seeds) and the primary metric per arm with 95%
    confidence whiskers, as PNGs in `folder`, logged to the study's latest parent run too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not len(report.table):
        return []
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{report.name}-curves.png", folder / f"{report.name}-{report.metric}.png"]
    _curves_figure(tracker, report, paths[0], plt)
    _bar_figure(report, paths[1], plt)
    paths += _output_figures(tracker, report, folder, plt)
    if report.parent_run_id:
        for path in paths:
            tracker.client.log_artifact(report.parent_run_id, str(path), "figures")
    report.figures = paths
    return paths


def _curves_figure(tracker: Tracker, report: StudyReport, path: Path, plt) -> None:
    import matplotlib.ticker  # noqa: F401 (matplotlib.ticker below)
    import matplotlib

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for arm in report.table["stage"]:
        runs = report.runs[report.runs["stage"] == arm]
        curves = []
        for run_id in runs["run_id"]:
            history = sorted(tracker.client.get_metric_history(run_id, "val_accuracy"), key=lambda m: m.step)
            if history:  # a run logged by hand may have no curve
                curves.append(pd.Series({m.step: 100 * m.value for m in history}, dtype=float))
        if not curves:
            continue
        frame = pd.concat(curves, axis=1)
        mean = frame.mean(axis=1)
        line, = axes.plot(mean.index, mean.values, label=arm if len(report.table) <= 12 else None, linewidth=1.5)
        axes.fill_between(frame.index, frame.min(axis=1), frame.max(axis=1), color=line.get_color(), alpha=0.2)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title(f"{report.name}: validation accuracy per epoch (mean, band = min–max over seeds)")
    if len(report.table) <= 12:
        axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _outputs(tracker: Tracker, runs: pd.DataFrame) -> tuple[str, dict] | None:
    """The test outputs a run logged (the most accurate run first), or None for runs made before they were logged."""
    import tempfile

    from ablate.workers import OUTPUTS_ARTIFACT

    for run_id in runs.sort_values("test_accuracy", ascending=False)["run_id"]:
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = tracker.client.download_artifacts(run_id, OUTPUTS_ARTIFACT, dst_path=folder)
            except Exception:
                continue
            with np.load(path) as arrays:
                return run_id, {key: arrays[key] for key in arrays.files}
    return None


def _output_figures(tracker: Tracker, report: StudyReport, folder: Path, plt) -> list[Path]:
    """The best arm's most accurate run: confusion matrix and its 25 most confident mistakes; a linear arm's
    class templates. Skipped (no file) for runs logged before test outputs were kept, or without the data."""
    from ablate.data import default_data_dir, load_mnist_arrays

    table, metric = report.table, report.metric
    means = table[f"{metric}_mean"]
    if means.isna().all():
        return []
    best = table["stage"].iloc[int(means.idxmax() if metric.endswith("accuracy") else means.idxmin())]
    found = _outputs(tracker, report.runs[report.runs["stage"] == best])
    paths: list[Path] = []
    try:
        arrays = load_mnist_arrays(default_data_dir())
    except AblateError:
        return paths
    if found is not None:
        _, outputs = found
        labels = arrays["test_labels"][: len(outputs["predictions"])].astype(int)
        paths.append(_confusion_figure(report, best, labels, outputs, folder, plt))
        paths.append(_mistakes_figure(report, best, labels, arrays["test_images"], outputs, folder, plt))
    linear = [name for name, model in zip(table["stage"], table["architecture"]) if str(model).startswith("linear")]
    for name in linear[:1]:
        found = _outputs(tracker, report.runs[report.runs["stage"] == name])
        if found is not None and "weights" in found[1]:
            paths.append(_templates_figure(report, name, found[1]["weights"], folder, plt))
    return paths


def _confusion_figure(report: StudyReport, arm: str, labels, outputs: dict, folder: Path, plt) -> Path:
    classes = 10
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (labels, outputs["predictions"].astype(int)), 1)
    figure, axes = plt.subplots(figsize=(6, 5.5))
    image = axes.imshow(matrix, cmap="Blues")
    for i in range(classes):
        for j in range(classes):
            axes.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                      color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    axes.set_xticks(range(classes))
    axes.set_yticks(range(classes))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{report.name}: confusion matrix of {arm} (best run, test set)", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    path = folder / f"{report.name}-confusion.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _mistakes_figure(report: StudyReport, arm: str, labels, images, outputs: dict, folder: Path, plt) -> Path:
    predictions, confidences = outputs["predictions"].astype(int), outputs["confidences"].astype(float)
    wrong = np.flatnonzero(predictions != labels)
    worst = wrong[np.argsort(-confidences[wrong])][:25]
    figure, grid = plt.subplots(5, 5, figsize=(7, 7.8))
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, worst):
        axes.imshow(images[index], cmap="gray_r")
        axes.set_title(f"{predictions[index]} ({confidences[index]:.2f}), true {labels[index]}", fontsize=7, color="red")
    figure.suptitle(f"{report.name}: the {len(worst)} most confident test mistakes of {arm}\n"
                    "(predicted class, its probability, true class)", fontsize=9)
    figure.tight_layout()
    path = folder / f"{report.name}-mistakes.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _templates_figure(report: StudyReport, arm: str, weights, folder: Path, plt) -> Path:
    figure, grid = plt.subplots(2, 5, figsize=(9, 4))
    bound = float(np.abs(weights).max())
    for digit, axes in enumerate(grid.flat):
        axes.imshow(weights[digit].reshape(28, 28), cmap="RdBu_r", vmin=-bound, vmax=bound)
        axes.set_title(str(digit))
        axes.axis("off")
    figure.suptitle(f"{report.name}: {arm}'s weight row per class as a 28×28 template (red +, blue −)", fontsize=9)
    figure.tight_layout()
    path = folder / f"{report.name}-templates.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _bar_figure(report: StudyReport, path: Path, plt) -> None:
    table, metric = report.table, report.metric
    means = table[f"{metric}_mean"]
    errors = [(m - lo if not pd.isna(lo) else 0, hi - m if not pd.isna(hi) else 0)
              for m, lo, hi in zip(means, table["ci_low"], table["ci_high"])]
    figure, axes = plt.subplots(figsize=(8, max(3, 0.3 * len(table) + 1.5)))
    positions = np.arange(len(table))[::-1]
    axes.barh(positions, means, xerr=np.array(errors).T, color="#4c72b0", ecolor="black", capsize=3)
    axes.set_yticks(positions, table["stage"], fontsize=7 if len(table) > 12 else 9)
    spread = (means.max() - means.min()) or 1.0
    axes.set_xlim(means.min() - spread - 0.5 * spread, means.max() + 0.6 * spread)
    axes.set_xlabel(PRIMARY_METRICS[metric] + " (mean, whiskers: 95% CI over seeds)")
    axes.set_title(f"{report.name}: {PRIMARY_METRICS[metric]} per arm")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _search_summary(info: dict, figures: Path | None) -> dict:
    """The Optuna side of a search study: trial counts, the best trials, importances, the history figure."""
    import warnings

    import optuna

    from ablate.search import open_storage

    study = optuna.load_study(study_name=info["study"], storage=open_storage(info["storage"]))
    trials = study.get_trials(deepcopy=False)
    counts = pd.Series([t.state.name for t in trials]).value_counts().to_dict()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = sorted(complete, key=lambda t: t.value, reverse=reverse)[:10]
    rows = [{"Optuna trial": t.number, info["objective"]: f"{t.value:.4f}",
             **{k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in t.params.items()}} for t in best]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "few trials in some regime": the table is still the best estimate
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):  # too few complete trials, or a single-valued space
        importances = {}
    figure = None
    if figures is not None and complete:
        figure = figures / f"{info['study']}-history.png"
        _history_figure(study, figure)
    return {"counts": counts, "best": pd.DataFrame(rows).fillna("—"), "importances": importances, "figure": figure,
            "objective": info["objective"], "storage": info["storage"]}


def _history_figure(study, path: Path) -> None:
    import warnings

    import matplotlib
    import optuna

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot_optimization_history(study)
    axes.figure.set_size_inches(8, 4.5)
    axes.figure.tight_layout()
    axes.figure.savefig(path, dpi=120)
    plt.close(axes.figure)


def _invocation(run) -> dict[str, str]:
    tags = run.data.tags
    start, end = run.info.start_time, run.info.end_time
    wall = tags.get("wall_seconds") or (f"{(end - start) / 1000:.1f}" if end else "")
    return {
        "command": tags.get("command", ""),
        "hardware": tags.get("hardware", ""),
        "status": run.info.status,
        "wall_seconds": wall,
        "trials_finished": tags.get("trials_finished", ""),
        "trials_skipped": tags.get("trials_skipped", ""),
        "git_commit": tags.get("git_commit", ""),
        "started": pd.Timestamp(start, unit="ms").strftime("%Y-%m-%d %H:%M UTC"),
    }


# Metrics a report can rank by; accuracies are shown in percent. Lower is better for losses.
PRIMARY_METRICS = {"test_accuracy": "Test acc (%)", "val_accuracy": "Val acc (%)", "test_loss": "Test loss",
                   "val_loss": "Val loss"}


def _scaled(values: pd.Series, metric: str) -> pd.Series:
    return values * 100 if metric.endswith("accuracy") else values


def summarise(runs: pd.DataFrame, stages: list[dict], baseline: int = 0, metric: str = "test_accuracy") -> pd.DataFrame:
    """Per arm: the primary metric's mean, std, n and 95% t-interval; its paired difference from the baseline arm
    (seed by seed), the paired t-test's p-value and Holm's correction over the arms; means of the rest."""
    runs = runs.copy()
    # The validation accuracy of the weights that were tested (the best epoch's when early stopping restored them);
    # runs logged before that metric existed tested their last epoch.
    runs["val_accuracy"] = runs["tested_val_accuracy"].fillna(runs["val_accuracy"])
    runs["throughput"] = runs["epochs_run"] * runs["train_size"] / runs["train_seconds"]
    by_arm = {stage["name"]: runs[runs["stage"] == stage["name"]] for stage in stages}
    reference = None
    if stages:
        base = by_arm[stages[baseline]["name"]]
        reference = _scaled(base.set_index("seed")[metric], metric)
    rows = []
    for index, stage in enumerate(stages):
        group = by_arm[stage["name"]]
        values = _scaled(group[metric], metric)
        low, high = stats.mean_interval(values)
        delta, p_value, pairs = (math.nan, math.nan, 0) if index == baseline else stats.paired_difference(
            _scaled(group.set_index("seed")[metric], metric), reference)
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
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = stats.holm(list(table["p_value"]))
        table["significant"] = table["p_holm"] < stats.ALPHA
    return table


# ---------------------------------------------------------------------------- rendering


def _fmt(value: float, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _has_reference(report: StudyReport) -> bool:
    return bool(len(report.table)) and bool(report.table["reference"].notna().any())


def _stopped_early(report: StudyReport) -> bool:
    runs = report.runs
    return bool(len(runs)) and bool((runs["tested_epoch"].notna() & (runs["tested_epoch"] != runs["epochs_run"])).any()
                                    or runs["epochs_run"].nunique() > 1)


def _bold_best(cells: list[str], values: pd.Series, higher_is_better: bool) -> list[str]:
    """The best value of a column in bold (ties too); nothing bold when there is only one row or no values."""
    if len(values) < 2 or values.isna().all():
        return cells
    best = values.max() if higher_is_better else values.min()
    return [f"**{c}**" if not pd.isna(v) and np.isclose(v, best) else c for c, v in zip(cells, values)]


def _count(value: float) -> str:
    if value is None or pd.isna(value):
        return "—"
    value = float(value)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def summary_frame(report: StudyReport) -> pd.DataFrame:
    """The table as the reader sees it (strings), shared by markdown and LaTeX."""
    table, metric = report.table, report.metric
    higher = metric.endswith("accuracy")
    digits = 2 if higher else 4
    base = table["stage"].iloc[report.baseline] if len(table) else "first"
    if report.design == "grid" and report.baseline == 0 and not report.baseline_named:
        base = "first point"
    columns: dict[str, list] = {"Stage" if report.design == "ladder" else "Arm": list(table["stage"])}
    if report.design in CHANGES_HEADING:  # a grid point's name already says what it sets
        columns[CHANGES_HEADING[report.design]] = list(table["changes"].str.replace("|", "\\|", regex=False))
    columns["Model"] = list(table["architecture"])
    columns["Params"] = [f"{int(v):,}" if not pd.isna(v) else "—" for v in table["params_count"]]
    columns["MACs"] = [_count(v) for v in table["macs"]]
    columns["n"] = list(table["n"])
    label = PRIMARY_METRICS[metric]
    means = [_fmt(m, digits) + (f" ± {_fmt(sd, digits)}" if not pd.isna(sd) else "")
             for m, sd in zip(table[f"{metric}_mean"], table[f"{metric}_std"])]
    columns[label] = _bold_best(means, table[f"{metric}_mean"], higher)
    columns["95% CI"] = [f"[{_fmt(lo, digits)}, {_fmt(hi, digits)}]" if not pd.isna(lo) else "—"
                         for lo, hi in zip(table["ci_low"], table["ci_high"])]
    unit = " (pts)" if higher else ""
    columns[f"Δ vs {base}{unit}"] = [
        "—" if i == report.baseline else _fmt(d, digits, True) + (" *" if sig else "")
        for i, (d, sig) in enumerate(zip(table["delta_vs_baseline"], table["significant"]))
    ]
    columns["p (Holm)"] = ["—" if pd.isna(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001") for p in table["p_holm"]]
    if metric != "val_accuracy":
        columns["Val acc (%)"] = _bold_best([_fmt(v, 2) for v in table["val_accuracy_mean"]], table["val_accuracy_mean"], True)
    if _stopped_early(report):
        columns["Epochs run / tested"] = [f"{_fmt(r, 1)} / {_fmt(t, 1)}"
                                          for r, t in zip(table["epochs_run_mean"], table["tested_epoch_mean"])]
    if metric != "test_loss":
        columns["Test loss"] = _bold_best([_fmt(v, 4) for v in table["test_loss_mean"]], table["test_loss_mean"], False)
    columns["Train time (s)"] = _bold_best([_fmt(v, 1) for v in table["train_seconds_mean"]], table["train_seconds_mean"], False)
    columns["Samples/s"] = _bold_best([_count(v) for v in table["throughput_mean"]], table["throughput_mean"], True)
    if table["peak_memory_mb_mean"].notna().any():
        columns["Peak mem (MB)"] = [_fmt(v, 0) for v in table["peak_memory_mb_mean"]]
    if _has_reference(report):
        columns["Reference (%)"] = ["—" if v is None or pd.isna(v) else f"{v:g}" for v in table["reference"]]
        columns["Ours − ref (pts)"] = [
            _fmt(m - r, 2, True) if r is not None and not pd.isna(r) else "—"
            for m, r in zip(table["test_accuracy_mean"], table["reference"])
        ]
    return pd.DataFrame(columns)


def markdown_table(report: StudyReport) -> str:
    return summary_frame(report).to_markdown(index=False, disable_numparse=True)


def latex_table(report: StudyReport) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); bold and significance marks carried over."""
    frame = summary_frame(report)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith(("Changes", "Search result"))])

    def tex(text: Any) -> str:
        text = str(text)
        bold = text.startswith("**") and text.endswith("**")
        text = text.strip("*") if bold else text
        for raw, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                             ("±", r"$\pm$"), ("→", r"$\to$"), ("Δ", r"$\Delta$"), ("−", "--"), ("—", "--")):
            text = text.replace(raw, escaped)
        return rf"\textbf{{{text}}}" if bold else text

    lines = [rf"\begin{{tabular}}{{{'l' * len(frame.columns)}}}", r"\toprule",
             " & ".join(tex(c) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(tex(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    caption = tex(f"{report.name}: {PRIMARY_METRICS[report.metric]}, mean ± std over seeds; * significant after Holm")
    return "\n".join([r"\begin{table}[ht]", r"\centering", r"\small", *lines, rf"\caption{{{caption}}}",
                      r"\end{table}"]) + "\n"


def _footnote(report: StudyReport) -> str:
    arm = "stage" if report.design == "ladder" else "arm"
    base = report.table["stage"].iloc[report.baseline] if len(report.table) else ""
    tested = (
        "the weights of the best validation epoch when early stopping restored them, else the final epoch's"
        if _stopped_early(report) else "the final epoch's weights"
    )
    text = (
        f"{PRIMARY_METRICS[report.metric]}: mean ± sample standard deviation over the n seeds of each {arm}, measured "
        f"once on {tested} (no std or interval when n = 1); 95% CI: Student-t interval of the mean. "
        f"Δ: the {arm}'s difference from '{base}', averaged over the seeds both ran (paired); p (Holm): the paired "
        f"t-test's two-sided p-value, Holm-corrected over the {len(report.table) - 1} comparisons; * marks p < 0.05 "
        "after correction (— when there are fewer than two pairs or the differences do not vary). Bold: the best "
        "value of a column. Val acc, test loss, train time: means over the seeds; val acc is that of the tested "
        "weights; each trial's test loss is its own training loss (MSE or cross-entropy, never smoothed). Train "
        "time: seconds of training and per-epoch validation per trial, MLflow logging excluded; samples/s: "
        "training examples per second of it. MACs: multiply-accumulates of one forward pass of one image."
    )
    if _stopped_early(report):
        text += " Epochs run / tested: means over the seeds of the epochs trained and of the epoch whose weights were tested."
    if _has_reference(report):
        text += f" Reference: the published single-run figure the {arm} reproduces."
    packed = report.runs[report.runs["pack_size"] > 1] if "pack_size" in report.runs else report.runs.iloc[:0]
    if len(packed):
        text += (f" {len(packed)} of the {len(report.runs)} trials trained packed ([execution] pack, up to "
                 f"{packed['pack_size'].max()} per network): a packed trial's train time is its whole pack's, so its "
                 "samples/s counts its own examples only.")
    return text


def _search_lines(report: StudyReport) -> list[str]:
    search = report.search
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(search["counts"].items()))
    lines = [f"### Search ({search['objective']})", "", f"Optuna trials: {counts} (storage `{search['storage']}`).", ""]
    if len(search["best"]):
        lines += ["Best trials:", "", search["best"].to_markdown(index=False, disable_numparse=True), ""]
    if search["importances"]:
        table = pd.DataFrame({"Setting": list(search["importances"]),
                              "Importance": [f"{v:.3f}" for v in search["importances"].values()]})
        lines += ["Parameter importances (optuna.importance.get_param_importances, Optuna's default evaluator):", "",
                  table.to_markdown(index=False, disable_numparse=True), ""]
    if search["figure"] is not None:
        lines += [f"![optimisation history]({search['figure'].name})", ""]
    lines.append("The arms above are the best configurations, re-trained on fresh seeds and tested; their search "
                 "result is the validation value of the one search run, the optimistic best-of-N.")
    return lines


def markdown_section(report: StudyReport, by: list[str] | None = None) -> str:
    lines = [f"## {report.name}", ""]
    if report.description:
        lines += [report.description, ""]
    lines += [
        f"{len(report.runs)} of {report.planned} planned trials finished.",
        "",
        markdown_table(report),
        "",
        _footnote(report),
    ]
    if report.figures:
        lines += ["", " ".join(f"![{p.stem}]({p.name})" for p in report.figures)]
    effects = _effect_lines(report, by)
    if effects:
        lines += ["", *effects]
    if report.search:
        lines += ["", *_search_lines(report)]
    if report.excluded:
        left_out = ", ".join(f"{n} {status}" for status, n in sorted(report.excluded.items()))
        lines += ["", f"Left out of the statistics: {left_out} run(s)."]
    if report.invocations:
        lines += ["", "Runs:", ""]
        for inv in reversed(report.invocations):
            bits = [f"`{inv['command']}`" if inv["command"] else "(command not recorded)"]
            if inv["hardware"]:
                bits.append(f"on {inv['hardware']}")
            bits.append(f"started {inv['started']}")
            if inv["wall_seconds"]:
                bits.append(f"wall time {float(inv['wall_seconds']):.0f} s")
            if inv["trials_finished"]:
                bits.append(f"{inv['trials_finished']} trials trained, {inv['trials_skipped']} already done")
            if inv["git_commit"]:
                bits.append(f"commit {inv['git_commit'][:12]}")
            bits.append(inv["status"])
            lines.append("- " + ", ".join(bits))
    return "\n".join(lines) + "\n"


def render(reports: list[StudyReport], fmt: str, by: list[str] | None = None) -> str:
    if fmt == "md":
        return "\n".join(markdown_section(r, by) for r in reports)
    if fmt == "latex":
        return "\n".join(latex_table(r) for r in reports)
    tables = []
    for r in reports:
        t = r.table.copy()
        t.insert(0, "study", r.name)
        tables.append(t)
    combined = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if fmt == "csv":
        return combined.to_csv(index=False)
    if fmt == "json":
        records = json.loads(combined.to_json(orient="records"))
        return json.dumps(records, indent=2) + "\n"
    raise AblateError(f"unknown report format {fmt!r}; allowed: md, csv, json, latex")


# ---------------------------------------------------------------------------- grids: main effects, interactions


def axes_of(report: StudyReport) -> list[str]:
    """The settings that vary between the runs and are set in every run: a grid's axes (seed aside)."""
    params = [c for c in report.runs.columns if c.startswith("param:") and c != "param:seed"]
    found = []
    for column in params:
        values = report.runs[column]
        if values.notna().all() and values.nunique() > 1 and not column.startswith(("param:model.blocks", "param:model.kwargs")):
            found.append(column.removeprefix("param:"))
    return found


def marginal_table(report: StudyReport, axis: str) -> pd.DataFrame:
    """Main effect of one axis: the primary metric's mean over every other axis and seed, per value."""
    runs, metric = report.runs, report.metric
    values = _scaled(runs[metric], metric)
    grouped = values.groupby(runs[f"param:{axis}"])
    frame = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "runs": grouped.size()})
    return frame.reset_index().rename(columns={f"param:{axis}": axis})


def interaction_table(report: StudyReport, first: str, second: str) -> pd.DataFrame:
    runs = report.runs
    for axis in (first, second):
        if f"param:{axis}" not in runs.columns:
            raise AblateError(f"--by {axis}: no such setting in study '{report.name}'{did_you_mean(axis, axes_of(report))}")
    values = _scaled(runs[report.metric], report.metric)
    return values.groupby([runs[f"param:{first}"], runs[f"param:{second}"]]).mean().unstack()


def _effect_lines(report: StudyReport, by: list[str] | None) -> list[str]:
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
        shown = table.map(lambda v: _fmt(v, digits))
        shown.index.name = f"{by[0]} \\ {by[1]}"
        lines += [f"### Interaction of {by[0]} and {by[1]} ({label}, mean over the rest)", "",
                  shown.reset_index().to_markdown(index=False, disable_numparse=True), ""]
    return lines


def build(
    uri: str, study: str | None = None, figures: Path | None = None, baseline: str | None = None,
    metric: str = "test_accuracy",
) -> list[StudyReport]:
    _check_store(uri)
    tracker = Tracker(uri)
    names = [study] if study else study_names(tracker)
    if not names:
        raise AblateError(f"no ablate studies in {uri}; run `ablate run STUDY.toml` first")
    if baseline is not None and len(names) != 1:
        raise AblateError("--baseline names an arm of one study: add --study NAME")
    reports = [load_study(tracker, name, figures, baseline, metric) for name in names]
    if figures is not None:
        for report in reports:
            write_figures(tracker, report, figures)
    return reports
