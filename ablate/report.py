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
from pathlib import Path

import pandas as pd

from ablate.errors import AblateError, did_you_mean
from ablate.tracking import EXPERIMENT_TAG, ROLE, SEED, STAGE, STAGE_INDEX, TRIAL_HASH, Tracker, read_plan, sqlite_path

METRICS = ("test_accuracy", "test_loss", "val_accuracy", "tested_val_accuracy", "train_seconds", "params_count",
           "epochs_run", "tested_epoch")
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
        }
        row.update({m: metrics.get(m, math.nan) for m in METRICS})
        rows.append(row)
    columns = ["run_id", "parent_run_id", "status", "start_time", "trial_hash", "stage", "stage_index", "seed", *METRICS]
    return pd.DataFrame(rows, columns=columns)


def load_study(tracker: Tracker, study: str, figures: Path | None = None) -> StudyReport:
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
        stage_of = {t["hash"]: t["stage"] for t in plan["trials"]}
        runs = runs[runs["trial_hash"].isin(stage_of)].copy()
        runs["stage"] = runs["trial_hash"].map(stage_of)  # the latest spec's stage names
        stages = plan["stages"]
    else:
        stages = [{"name": s, "index": i} for s, i in runs.groupby("stage")["stage_index"].min().sort_values().items()]
    finished = runs[runs["status"] == "FINISHED"].sort_values("start_time")
    latest = finished.drop_duplicates("trial_hash", keep="last")
    excluded = runs[runs["status"] != "FINISHED"]["status"].value_counts().to_dict()
    return StudyReport(
        name=study,
        description=(plan or {}).get("description", ""),
        design=(plan or {}).get("design", "ladder"),
        table=summarise(latest, stages),
        runs=latest.reset_index(drop=True),
        planned=len(plan["trials"]) if plan else len(latest),
        excluded={str(k): int(v) for k, v in excluded.items()},
        # The invocations that trained the runs in the table, not every run of an older design.
        invocations=[_invocation(r) for r in parents if r.info.run_id in set(latest["parent_run_id"])],
        search=_search_summary(plan["search"], figures) if plan and plan.get("search") else None,
    )


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


def summarise(runs: pd.DataFrame, stages: list[dict]) -> pd.DataFrame:
    """Per stage: mean and sample std over seeds, n, and the difference from the first stage."""
    rows = []
    for stage in stages:
        group = runs[runs["stage"] == stage["name"]]
        acc = group["test_accuracy"] * 100
        # The validation accuracy of the weights that were tested (the best epoch's when early stopping restored
        # them); runs logged before that metric existed tested their last epoch.
        val = group["tested_val_accuracy"].fillna(group["val_accuracy"]) * 100
        rows.append(
            {
                "stage": stage["name"],
                "changes": stage.get("changes", ""),
                "architecture": stage.get("architecture", ""),
                "params_count": stage.get("params_count", group["params_count"].max()),
                "n": len(group),
                # pandas gives NaN for the mean of no runs and the std of fewer than two
                "test_accuracy_mean": acc.mean(),
                "test_accuracy_std": acc.std(ddof=1),
                "val_accuracy_mean": val.mean(),
                "epochs_run_mean": group["epochs_run"].mean(),
                "tested_epoch_mean": group["tested_epoch"].mean(),
                "test_loss_mean": group["test_loss"].mean(),
                "train_seconds_mean": group["train_seconds"].mean(),
                "reference": stage.get("reference"),
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table["delta_vs_first"] = table["test_accuracy_mean"] - table["test_accuracy_mean"].iloc[0]
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


def markdown_table(report: StudyReport) -> str:
    table = report.table
    first = table["stage"].iloc[0] if len(table) else "first"
    columns = {"Stage" if report.design == "ladder" else "Arm": table["stage"]}
    if report.design in CHANGES_HEADING:  # a grid point's name already says what it sets
        columns[CHANGES_HEADING[report.design]] = table["changes"].str.replace("|", "\\|", regex=False)
    shown = pd.DataFrame(
        {
            **columns,
            "Model": table["architecture"],
            "Params": table["params_count"].map(lambda v: f"{int(v):,}" if not pd.isna(v) else "—"),
            "n": table["n"],
            "Test acc (%)": [
                _fmt(m, 2) + (f" ± {_fmt(s, 2)}" if not math.isnan(s) else "")
                for m, s in zip(table["test_accuracy_mean"], table["test_accuracy_std"])
            ],
            ("Δ vs first point (pts)" if report.design == "grid" else f"Δ vs {first} (pts)"): [("—" if i == 0 else _fmt(d, 2, True)) for i, d in enumerate(table["delta_vs_first"])],
            "Val acc (%)": table["val_accuracy_mean"].map(lambda v: _fmt(v, 2)),
            "Test loss": table["test_loss_mean"].map(lambda v: _fmt(v, 4)),
            "Train time (s)": table["train_seconds_mean"].map(lambda v: _fmt(v, 1)),
        }
    )
    if _stopped_early(report):
        shown.insert(shown.columns.get_loc("Test loss"), "Epochs run / tested", [
            f"{_fmt(r, 1)} / {_fmt(t, 1)}" for r, t in zip(table["epochs_run_mean"], table["tested_epoch_mean"])
        ])
    if _has_reference(report):
        shown["Reference (%)"] = table["reference"].map(lambda v: "—" if v is None or pd.isna(v) else f"{v:g}")
        shown["Ours − ref (pts)"] = [
            _fmt(m - r, 2, True) if r is not None and not pd.isna(r) else "—"
            for m, r in zip(table["test_accuracy_mean"], table["reference"])
        ]
    return shown.to_markdown(index=False, disable_numparse=True)


def _footnote(report: StudyReport) -> str:
    arm = "stage" if report.design == "ladder" else "arm"
    first = {"ladder": "the first stage's", "ablation": "the baseline's", "grid": "the first grid point's"}.get(
        report.design, "the first arm's")
    tested = (
        "the weights of the best validation epoch when early stopping restored them, else the final epoch's"
        if _stopped_early(report) else "the final epoch's weights"
    )
    text = (
        f"Test acc: mean ± sample standard deviation over the n seeds of each {arm}, measured once on {tested} "
        "(no std when n = 1). Val acc, test loss, train time: means over the seeds; val acc is that of the tested "
        "weights; each trial's test loss is its own training loss (MSE or cross-entropy, never smoothed). "
        f"Δ: the {arm}'s mean test accuracy minus {first}, in percentage points. Train time: seconds of training "
        "and per-epoch validation per trial, MLflow logging excluded."
    )
    if _stopped_early(report):
        text += " Epochs run / tested: means over the seeds of the epochs trained and of the epoch whose weights were tested."
    if _has_reference(report):
        text += f" Reference: the published single-run figure the {arm} reproduces."
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


def markdown_section(report: StudyReport) -> str:
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


def render(reports: list[StudyReport], fmt: str) -> str:
    if fmt == "md":
        return "\n".join(markdown_section(r) for r in reports)
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
    raise AblateError(f"unknown report format {fmt!r}; allowed: md, csv, json")


def build(uri: str, study: str | None = None, figures: Path | None = None) -> list[StudyReport]:
    _check_store(uri)
    tracker = Tracker(uri)
    names = [study] if study else study_names(tracker)
    if not names:
        raise AblateError(f"no ablate studies in {uri}; run `ablate run STUDY.toml` first")
    return [load_study(tracker, name, figures) for name in names]
