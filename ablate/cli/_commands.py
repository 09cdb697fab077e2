"""`ablate plan`, `report`, `export`, `followup` and `schema`: each parses nothing more, calls the library, prints."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ablate._shell import command, on_path
from ablate.errors import AblateError


def cmd_plan(args: argparse.Namespace) -> int:
    from ablate import console
    from ablate.design import expand_design
    from ablate.spec import importable, load_study
    from ablate.tracking import store_uri, trial_statuses

    importable(args.study)  # before the study is read: a dataset factory is called to validate it
    study = load_study(args.study)
    uri = store_uri(args.tracking_uri)
    if study.search is not None:  # a search has no fixed trial list: its space, budget and confirm phase
        held = _search_held(study, uri, args.storage)
        if args.format == "json":
            rows, summary = console.search_plan(study)
            document = {"study": study.name, "design": "search", "space": rows, "summary": summary,
                        "dataset": console.dataset_info(study, [], args.data_dir), "store": held}
            print(json.dumps(document, indent=2, default=str))
        else:
            console.print_search_plan(study, data_dir=args.data_dir)
            _print_search_held(held)
        return 0
    design = expand_design(study)
    statuses = trial_statuses(uri, study.name)
    if args.format == "json":
        print(json.dumps(console.plan_json(study, design, statuses, args.data_dir), indent=2))
    else:
        console.print_plan(study, design, statuses, uri, data_dir=args.data_dir)
    return 0


def _search_held(study, uri: str, storage: str | None) -> dict:
    """What the stores hold of a search: its Optuna study's trials by state, earlier versions, finished confirm runs."""
    from ablate import search
    from ablate.tracking import store_label, trial_statuses

    storage = storage or search.default_storage(uri)
    name = search.optuna_name(study)
    progress = search.search_progress(storage, study.name, name)
    states, earlier = progress if progress is not None else ({}, {})
    statuses = trial_statuses(uri, study.name) or {}
    return {"tracking_store": store_label(uri), "optuna_storage": storage, "optuna_study": name, "trials": states,
            "trials_budget": study.search.settings.trials, "earlier_versions": earlier,
            "finished_trial_runs": sum(1 for status in statuses.values() if status == "done")}


def _print_search_held(held: dict) -> None:
    states, budget = held["trials"], held["trials_budget"]
    if not states:
        print(f"store: no trials yet; a run starts Optuna study '{held['optuna_study']}' in {held['optuna_storage']}")
    else:
        done = sum(count for state, count in states.items() if state in ("complete", "pruned"))
        listed = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        print(f"store: Optuna study '{held['optuna_study']}' in {held['optuna_storage']}: {done} of "
              f"{budget or 'open-ended'} trials done ({listed}); {held['finished_trial_runs']} trials finished, "
              f"search and confirm runs, in {held['tracking_store']}")
    for name, count in held["earlier_versions"].items():
        print(f"       earlier version '{name}' ({count} trials): the search's settings or space changed since; kept, "
              "not continued")


def _existing_store(args: argparse.Namespace, write: bool = False, study: str = "STUDY.toml") -> str:
    """The tracking URI of a command that reads what `ablate run` recorded: a missing SQLite store is one message
    (before MLflow loads, and without creating it), a broken one is check_store's."""
    from ablate.tracking import check_store, sqlite_path, store_label, store_uri

    uri = store_uri(args.tracking_uri)
    store = sqlite_path(uri)
    if store is not None and not store.exists():
        raise AblateError(f"no MLflow store at {store_label(uri)}; run `{command('ablate')} run {study}` here first, "
                          "or pass --tracking-uri")
    check_store(uri, write=write)
    return uri


def cmd_report(args: argparse.Namespace) -> int:
    """The cheap checks first (format, the store's file), so that a missing store is said before MLflow loads."""

    suffix = Path(args.out).suffix.lstrip(".") if args.out else "md"
    fmt = args.format or {"tex": "latex"}.get(suffix, suffix)
    if fmt not in ("md", "csv", "json", "latex"):
        raise AblateError(f"--out {args.out}: cannot tell the format from '.{suffix}'; pass --format md, csv, json or "
                          "latex")
    uri = _existing_store(args)

    from ablate.report import build, column_keys, render

    column_keys(args.columns)  # before anything is read
    figures = Path(args.out) if args.out and fmt == "md" and not args.no_figures else None
    by = [b.strip() for b in args.by.split(",")] if args.by else None
    data_dir = Path(args.data_dir) if args.data_dir else None
    reports = build(uri, args.study, figures, args.baseline, args.metric, data_dir)
    text = render(reports, fmt, by, args.columns)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
        _print_figures(reports)
    else:
        sys.stdout.write(text)
    return 0


def _print_figures(reports) -> None:
    """What was drawn (stdout) and each figure that was not, with why (stderr: the report is written all the same)."""
    for report in reports:
        for path in report.figures:
            print(f"wrote {path}")
        if report.figures and report.parent_run_id:
            print(f"logged {len(report.figures)} figure(s) of {report.name} to its latest run {report.parent_run_id} "
                  f"(artifacts, as figures/{report.name}-*.png)")
        for figure, why in report.not_drawn:
            print(f"ablate report: {report.name}: {figure} not drawn: {why}", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> int:
    if args.out is None and not args.register:
        raise AblateError("ablate export: say where the models go: --out DIR, --register, or both")
    if args.out is None and args.format != ("pt2",):
        raise AblateError("ablate export: --format says which files --out holds; add --out DIR")
    uri = _existing_store(args, write=args.register)

    from ablate.export import export_models

    exported = export_models(uri, args.study, args.arm, Path(args.out) if args.out else None, args.register,
                             force=args.force, trust_pickles=args.trust_pickles, formats=args.format,
                             data_dir=args.data_dir)
    for item in exported:
        where = [f"wrote {item.folder}/ ({', '.join(item.files)})"] if item.folder else []
        where += item.checks
        where += [f"registered as {item.registered}"] if item.registered else []
        print(f"{item.arm}: run {item.run_id}, test accuracy {100 * item.test_accuracy:.2f}%: {'; '.join(where)}")
    if args.register and exported:
        print(f"serve one: {serve_hint(uri, exported[0].model_uri)}")
    return 0


def serve_hint(uri: str, model_uri: str) -> str:
    """`mlflow models serve` of a registered model, as it runs here: MLflow starts uvicorn by name, so a virtual
    environment not activated goes on PATH for it (ablate._shell's on_path); in this process's environment (the
    default, virtualenv, would build a new one, from the network) and beside `mlflow ui`'s port 5000."""
    from ablate.tracking import default_uri

    store = "" if uri == default_uri() else f"MLFLOW_TRACKING_URI={shlex.quote(uri)} "
    line = f"mlflow models serve -m {shlex.quote(model_uri)} --env-manager local --port 5001"
    return store + on_path(line, "mlflow", "uvicorn")


def cmd_followup(args: argparse.Namespace) -> int:
    from ablate.spec import load_study

    study = load_study(args.study)
    seeds = _seed_list(args.seeds) if args.seeds else None
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.force:
        raise AblateError(f"{out} exists; pass --force to overwrite it, or another --out")
    uri = _existing_store(args, study=args.study)

    from ablate.report import followup
    from ablate.search import default_storage

    made = followup(uri, study, args.storage or default_storage(uri), args.name, seeds, args.command_line,
                    args.point)
    if out is None:
        sys.stdout.write(made.text)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(made.text)
    chosen = "winner" if args.point is None else "chosen"
    print(f"{chosen}: {made.winner.name} ({study.search.settings.objective} {made.objective:.4f} on the confirm seeds)")
    if made.base_better:
        print("note: the base settings did better on validation; the study says so in its header")
    for change in made.changes:
        print(f"  {change.arm}: {change.describe()}")
    print(f"wrote {out}: run it with `{command('ablate')} run {out}`")
    return 0


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise AblateError(f"--seeds {text}: use integers separated by commas, such as 43,44,45") from None
    if len(set(seeds)) != len(seeds):
        raise AblateError(f"--seeds {text}: a seed is listed twice")
    return seeds


def cmd_schema(args: argparse.Namespace) -> int:
    from ablate.spec import schema_markdown

    sys.stdout.write(schema_markdown())
    return 0
