"""MLflow runs → pandas: the runs of a study's latest design, the latest finished run per trial, its invocations."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pandas as pd

from ablate import datasets
from ablate._shell import command
from ablate.errors import AblateError, did_you_mean
from ablate.report._draw import FigureFiles
from ablate.report._judge import Judging
from ablate.report._report import METRICS, StudyReport
from ablate.report._search import search_summary
from ablate.report._table import summarise
from ablate.tracking import (
    DATA_DIR,
    DEVICE,
    EXPERIMENT_TAG,
    IMPORT_PATHS,
    PACK_SIZE,
    ROLE,
    SEED,
    STAGE,
    STAGE_INDEX,
    TRIAL_HASH,
    Tracker,
    latest_plan,
    parent_runs,
    sqlite_path,
    stand_ins,
)

DATASET_PARAM = "dataset"  # the trial setting naming the dataset (TrialSettings.dataset)


def check_store(uri: str) -> None:
    """Refuse to read a SQLite store that does not exist (MLflow would silently create it)."""
    path = sqlite_path(uri)
    if path is not None:
        if not path.exists():
            raise AblateError(
                f"no MLflow store at {path} (tracking URI {uri}); run `{command('ablate')} run STUDY.toml` first, "
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
            "pack_size": int(tags.get(PACK_SIZE, 1)),
            "device": tags.get(DEVICE),
        }
        row.update({m: metrics.get(m, math.nan) for m in METRICS})
        row["train_size"] = _train_size(run.data.params)
        row.update({f"param:{k}": v for k, v in run.data.params.items()})
        rows.append(row)
    columns = ["run_id", "parent_run_id", "status", "start_time", "trial_hash", "stage", "stage_index", "seed",
               "pack_size", "device", *METRICS, "train_size"]
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=columns + sorted(c for c in frame.columns if c.startswith("param:")))


def _train_size(params: dict[str, str]) -> float:
    """Training examples per epoch, from the run's params (the split is part of the settings)."""
    limit = params.get("data.train_limit", "none")
    if limit not in ("none", ""):
        return float(limit)
    name = params.get(DATASET_PARAM)
    total = datasets.get(name).train_size if name in datasets.names() else math.nan
    return total - float(params.get("data.val_size", "nan"))


def load_study(
    tracker: Tracker, study: str, figures: FigureFiles | None = None, baseline: str | None = None,
    metric: str = "test_accuracy",
) -> StudyReport:
    """The study's report as data; a search's history figure drawn where `figures` says (None: no figures)."""
    experiment = tracker.client.get_experiment_by_name(study)
    if experiment is None or EXPERIMENT_TAG not in experiment.tags:
        known = study_names(tracker)
        raise AblateError(
            f"no study named '{study}' in {tracker.uri}{did_you_mean(study, known)}; "
            f"studies there: {', '.join(known) or 'none'}"
        )
    exp_id = experiment.experiment_id
    parents = parent_runs(tracker, exp_id)
    plan = latest_plan(tracker, parents)
    trial_runs = tracker.search(exp_id, f"tags.{ROLE} = 'trial'")
    runs = _run_rows(trial_runs)
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
    trained_on = latest[f"param:{DATASET_PARAM}"].dropna().unique() if f"param:{DATASET_PARAM}" in latest else []
    return StudyReport(
        name=study,
        description=(plan or {}).get("description", ""),
        described={str(s["name"]): s["description"] for s in stages if s.get("description")},
        design=(plan or {}).get("design", "ladder"),
        dataset=str(trained_on[0]) if len(trained_on) else None,
        table=summarise(latest, stages, base_index, metric, judging := Judging.of_plan(plan, metric)),
        judging=judging,
        metric=metric,
        baseline=base_index,
        parent_run_id=parents[0].info.run_id if parents else None,
        baseline_named=bool(baseline or (plan or {}).get("baseline")),
        runs=latest.reset_index(drop=True),
        planned=len(plan["trials"]) if plan else len(latest),
        excluded={str(k): int(v) for k, v in excluded.items()},
        # The invocations that trained the runs in the table, not every run of an older design.
        invocations=[_invocation(r) for r in parents if r.info.run_id in set(latest["parent_run_id"])],
        search=search_summary(plan["search"], figures, latest) if plan and plan.get("search") else None,
        models=_models(trial_runs, latest),
        **_sources(parents),
    )


def _sources(parents: list) -> dict:
    """Where the latest invocation that recorded it read the data and imported the study's factories from (runs of
    earlier versions recorded neither)."""
    recorded = next((p.data.tags for p in parents if DATA_DIR in p.data.tags), None)
    if recorded is None:
        return {}
    try:
        folders = json.loads(recorded.get(IMPORT_PATHS, "[]"))
    except ValueError:  # a tag edited by hand: no folders, the data folder still
        folders = []
    paths = tuple(f for f in folders if isinstance(f, str)) if isinstance(folders, list) else ()
    return {"data_dir": recorded[DATA_DIR], "import_paths": paths}


def _models(trial_runs: list, latest: pd.DataFrame) -> dict[str, str]:
    """Arm → the run whose saved model stands for it, among the runs the table is computed from (the trial runs
    already read, not a second query)."""
    stage_of = dict(zip(latest["run_id"], latest["stage"]))
    return {stage_of[run.info.run_id]: run.info.run_id for run in stand_ins(trial_runs).values()
            if run.info.run_id in stage_of}


def _fill_macs(tracker: Tracker, parents: list, plan: dict) -> None:
    """Plans logged before MACs were recorded: compute them from the study file the same parent run carries."""
    if all("macs" in stage for stage in plan["stages"]) or plan.get("search"):
        return
    from ablate import models, spec
    from ablate.design import expand

    for parent in parents:
        files = [a.path for a in tracker.client.list_artifacts(parent.info.run_id) if a.path.endswith(".toml")]
        if not files:
            continue
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = tracker.client.download_artifacts(parent.info.run_id, files[0], dst_path=folder)
                if _foreign_factory(Path(path)):
                    continue  # reading the study would call a factory the store names that is not your own code
                by_name = {t.stage: models.macs(t.settings.model, datasets.get(t.settings.dataset))
                           for t in expand(spec.load_study(path))}
            except Exception:  # an older schema or a custom model that cannot be imported here: no MACs
                continue
        if all(stage["name"] in by_name for stage in plan["stages"]):
            for stage in plan["stages"]:
                stage["macs"] = by_name[stage["name"]]
            return


def _foreign_factory(path: Path) -> bool:
    """Whether the study file a store holds names a factory (a custom model's, a dataset's, or a dataset factory
    key) that is not the researcher's own code, or cannot be read: reading it with spec.load_study would call the
    factory, and a store anyone may write to must not choose what ablate calls."""
    import tomllib

    from ablate._own_code import foreign_code

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError and TOMLDecodeError included: spec.load_study refuses it too
        return True
    named: list[str] = []

    def walk(value, key: str = "") -> None:
        if isinstance(value, dict):
            for inner, item in value.items():
                walk(item, str(inner))
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and (key == "factory" or datasets.is_factory_key(value)):
            named.append(value.removeprefix("factory:").split("{")[0].split("#")[0])

    walk(raw)
    return any(foreign_code(reference) is not None for reference in named)


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
        "torch_version": tags.get("torch_version", ""),
        "started": pd.Timestamp(start, unit="ms").strftime("%Y-%m-%d %H:%M UTC"),
    }

