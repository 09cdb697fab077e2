"""Command line: argument parsing and printing only; the work lives in the library.

`ablate --help`, `ablate plan` and `ablate schema` import neither torch nor mlflow, so they
answer at once; `run` and `report` import what they need when they start.
"""

from __future__ import annotations

from ablate import _startup

_startup.install_for_console_script()  # first: a Ctrl-C from here on is one line and exit 130 (see there)

import argparse  # noqa: E402 — the imports below come after the handler
import json
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import ablate
from ablate.errors import EXIT_FAILED_TRIALS, EXIT_INTERRUPTED, EXIT_TERMINATED, AblateError

if TYPE_CHECKING:
    from ablate.design import Trial
    from ablate.spec import Study

DESCRIPTION = """\
ablate runs ablation studies of neural networks from one TOML file: it expands the
study into trials, trains them, logs every run to MLflow and writes comparison tables.

  ablate plan studies/linearity.toml      what would run (no training)
  ablate run studies/linearity.toml       train every trial not already done
  mlflow ui                               browse the runs (same folder)
  ablate report --out results/table.md    the comparison table
"""

EPILOG = """\
exit codes: 0 success; 1 some trial failed (the others are recorded); 2 bad input
(study file, flags, data files) with one message naming the problem; 3 the tracking store
or Optuna storage failed or cannot be used (corrupt, read-only, full, unreachable, another
program's experiment), nothing recorded changed; 130 interrupted (Ctrl-C); 143 stopped by
SIGTERM (preempted). Run the same command again to resume."""


def _default_uri() -> str:
    from ablate.tracking import default_uri

    return default_uri()


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ 1, not {text!r}")
    return int(text)


def _pack_size(text: str) -> int | str:
    return "auto" if text == "auto" else _positive(text)


def _devices(text: str) -> str | tuple[int, ...]:
    if text in ("auto", "cpu"):
        return text
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise AblateError(f"--devices {text}: use auto, cpu or GPU indices such as 0,2")
    return tuple(int(p) for p in parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ablate", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"ablate {ablate.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    tracking = argparse.ArgumentParser(add_help=False)
    tracking.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the full traceback of an error")
    tracking.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="MLflow tracking URI (default: sqlite:///<current folder>/mlflow.db, which `mlflow ui` here shows)",
    )

    run = commands.add_parser(
        "run", parents=[tracking], help="train every trial of a study not already done",
        description="Validate the study, expand it into trials, train every trial that has no finished run "
        "in the store yet, log each to MLflow, and print the comparison table.",
    )
    run.add_argument("study", metavar="STUDY.toml", help="the study file")
    run.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="folder holding the datasets in torchvision's layout, e.g. MNIST/raw/ (default: $ABLATE_DATA_DIR, "
        "else ./data)",
    )
    run.add_argument(
        "--devices", default=None, metavar="auto|cpu|0,2",
        help="where workers run: every visible GPU (auto, else the CPU), the CPU, or these GPU indices; "
        "overrides [execution] devices",
    )
    run.add_argument("--workers-per-device", type=_positive, default=None, metavar="K",
                     help="worker processes per device (CPU: the number of CPU workers); overrides [execution]")
    run.add_argument("--max-workers", type=_positive, default=None, metavar="N",
                     help="at most N worker processes overall; overrides [execution]")
    run.add_argument("--backend", choices=("local", "ray"), default=None,
                     help="local: worker processes on this machine; ray: actors on every node of a Ray cluster "
                          '(pip install "ablate[ray]"); overrides [execution]')
    run.add_argument("--address", default=None, metavar="HOST:PORT",
                     help="the Ray cluster's head (or auto) for --backend ray; overrides [execution]")
    run.add_argument("--pack", type=_pack_size, default=None, metavar="K|auto",
                     help="train up to K trials of one architecture together as one batched network (auto: where "
                     "it pays, measured); overrides [execution] pack")
    run.add_argument("--storage", default=None, metavar="URL|FILE",
                     help="search studies: the Optuna storage, an RDB URL (postgresql://…) or a journal file "
                     "(default: optuna-journal.log beside the MLflow store)")
    run.add_argument("--claims", default=None, metavar="URL",
                     help="the database in which invocations claim trials, so each trains once (sqlite:///…, "
                     "postgresql://…); default: $ABLATE_CLAIMS, else derived from the store (NAME.claims.db beside "
                     "a SQLite store, the store's own database, the search's RDB storage)")
    run.set_defaults(func=cmd_run)

    check = commands.add_parser(
        "check", parents=[tracking], help="sanity-check a study's pipeline, per architecture, in minutes",
        description="For each architecture of the study, on its data, loss, optimiser and augmentation: the "
        "initial loss is near ln(classes) (cross-entropy), the model fits 128 training examples, trained briefly "
        "on the real labels it beats chance clearly and on shuffled labels it does not. One PASS/FAIL line per "
        "check, each architecture recorded in MLflow as a run with role `check`; exit 1 when a check fails.",
    )
    check.add_argument("study", metavar="STUDY.toml", help="the study file")
    check.add_argument("--data-dir", default=None, metavar="DIR",
                       help="folder holding the datasets (default: $ABLATE_DATA_DIR, else ./data)")
    check.add_argument("--no-record", action="store_true", help="print the checks only, log nothing to MLflow")
    check.set_defaults(func=cmd_check)

    plan = commands.add_parser(
        "plan", parents=[tracking], help="list the trials a study expands into, and which the store already holds",
        description="Dry run: validate the study and list its trials (hash, stage, seed, the settings that "
        "differ between trials, parameter count) and, when the tracking store exists, each trial's status there "
        "(done, failed, killed, running, or to do).",
    )
    plan.add_argument("study", metavar="STUDY.toml", help="the study file")
    plan.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    plan.add_argument("--storage", default=None, metavar="URL|FILE",
                      help="search studies: the Optuna storage to read (default: optuna-journal.log beside the store)")
    plan.set_defaults(func=cmd_plan)

    report = commands.add_parser(
        "report", parents=[tracking], help="write the comparison table from the runs in MLflow",
        description="Read the finished runs back from MLflow and write one comparison table per study.",
    )
    report.add_argument("--study", default=None, metavar="NAME", help="one study (default: every study in the store)")
    report.add_argument("--out", default=None, metavar="FILE", help="write here instead of standard output")
    report.add_argument("--format", choices=("md", "csv", "json", "latex"), default=None,
                        help="default: from --out's suffix (.md, .csv, .json, .tex), else md")
    report.add_argument("--metric", choices=("test_accuracy", "val_accuracy", "test_loss", "val_loss"),
                        default="test_accuracy", help="the primary metric of the statistics (default: test_accuracy)")
    report.add_argument("--baseline", default=None, metavar="ARM",
                        help="the arm deltas are taken against (default: a ladder's first stage, an ablation's "
                        "baseline, a grid's first point, a search's best); needs --study")
    report.add_argument("--no-figures", action="store_true",
                        help="skip the PNG figures (written next to --out and logged to the study's parent run)")
    report.add_argument("--columns", default="default", metavar="default|all|A,B",
                        help="table columns of md and latex: default (arm, changes, n, metric ± std, 95%% CI, Δ vs "
                        "baseline, p (Holm), params, reference), all, or a comma list of arm, changes, model, params, "
                        "macs, n, metric, ci, delta, p, val_acc, epochs, test_loss, train_time, samples_s, peak_mem, "
                        "reference, vs_reference (csv and json always hold every number)")
    report.add_argument("--by", default=None, metavar="A,B",
                        help="add the interaction table of two settings, e.g. --by model.dropout,model.batchnorm")
    report.set_defaults(func=cmd_report)

    export = commands.add_parser(
        "export", parents=[tracking], help="write a study's saved models as files that load without MLflow",
        description="For each arm of the study (or --arm), the run whose model stands for it (the arm's best by "
        "test accuracy, see [tracking] models): the network its settings rebuild with its saved weights (nothing from "
        "the store is unpickled), checked against the scores it was saved with, then written to DIR/<arm>/ as a "
        "state dict, ablate.json (the resolved settings, the input it takes, the class names), a torch.export "
        "program model.pt2 (TorchScript model.ts where the network does not export) and a README saying how to load "
        "each; --register also registers it in MLflow's model registry. An arm folder that already holds files is "
        "refused without --force; export follows no symbolic link out of DIR.",
    )
    export.add_argument("--study", required=True, metavar="NAME", help="the study (its [study] name)")
    export.add_argument("--arm", default=None, metavar="ARM", help="one arm (default: every arm with a saved model)")
    export.add_argument("--out", default=None, metavar="DIR", help="write the models here, one folder per arm")
    export.add_argument("--register", action="store_true",
                        help="register each model in MLflow's model registry as <study>-<arm> (a new version)")
    export.add_argument("--force", action="store_true",
                        help="write into arm folders that already hold files: replace the files export writes there "
                        "(state_dict.pt, ablate.json, model.pt2, model.ts, README.md), keep the others")
    export.add_argument("--trust-pickles", action="store_true",
                        help="trust everyone who can write to the store: load a model that exists only as a pickle "
                        "and call a factory its settings name outside your own code (either may run any code)")
    export.set_defaults(func=cmd_export)

    followup = commands.add_parser(
        "followup", parents=[tracking], help="write an ablation study around a search's confirmed winner",
        description="Read a finished search (its confirm phase included) and write an ablation study: the "
        "configuration confirmed best on validation as the baseline, one arm per change it made to the search's "
        "base settings, undoing that change alone (the same setting of every block counts as one change, as does a "
        "setting searched only under a condition with that condition), and one arm undoing them all. Then `ablate "
        "run` it: the table says what each change buys.",
    )
    followup.add_argument("study", metavar="STUDY.toml", help="the search study file")
    followup.add_argument("--out", default=None, metavar="FILE", help="write the study here (default: print it)")
    followup.add_argument("--name", default=None, metavar="NAME", help="the new study's name (default: <study>-winner)")
    followup.add_argument("--seeds", default=None, metavar="A,B,C",
                          help="the new study's seeds (default: the search's confirm seeds)")
    followup.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    followup.add_argument("--storage", default=None, metavar="URL|FILE",
                          help="the Optuna storage (default: optuna-journal.log beside the store)")
    followup.set_defaults(func=cmd_followup)

    schema = commands.add_parser(
        "schema", help="print every key a study file accepts, with types and defaults (markdown)"
    )
    schema.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    schema.set_defaults(func=cmd_schema)
    return parser


# ---------------------------------------------------------------------------- commands


def cmd_plan(args: argparse.Namespace) -> int:
    from ablate import console
    from ablate.design import expand_design
    from ablate.spec import load_study
    from ablate.tracking import trial_statuses

    _make_factories_importable(args.study)  # before the study is read: a dataset factory is called to validate it
    study = load_study(args.study)
    uri = args.tracking_uri or _default_uri()
    if study.search is not None:  # a search has no fixed trial list: its space, budget and confirm phase
        held = _search_held(study, uri, args.storage)
        if args.format == "json":
            rows, summary = console.search_plan(study)
            document = {"study": study.name, "design": "search", "space": rows, "summary": summary, "store": held}
            print(json.dumps(document, indent=2, default=str))
        else:
            console.print_search_plan(study)
            _print_search_held(held)
        return 0
    design = expand_design(study)
    statuses = trial_statuses(uri, study.name)
    if args.format == "json":
        print(json.dumps(console.plan_json(study, design, statuses), indent=2))
    else:
        console.print_plan(study, design, statuses, uri)
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


def _make_factories_importable(study_path: str) -> tuple[str, ...]:
    """A custom model's or dataset's `package.module` may live in the current directory or beside the study file."""
    folders = (str(Path(study_path).resolve().parent), os.getcwd())
    for folder in folders:
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return folders


def cmd_check(args: argparse.Namespace) -> int:
    """The study and its data are checked as `run` checks them, before anything is trained or recorded."""
    _, study, trials = _load_study(args)
    data_dir = _data_dir(args)
    uri = args.tracking_uri or _default_uri()
    if not args.no_record:
        from ablate.tracking import check_store

        check_store(uri, write=True)
    _check_data(study, trials, data_dir)
    from ablate.check import check_study

    results = check_study(trials, data_dir)
    for stage in results:
        print(f"{stage.stage} (seed {stage.seed}): {'passed' if stage.passed else 'FAILED'}")
        for item in stage.checks:
            print(f"  {item.line()}")
    if not args.no_record:
        from ablate.tracking import Tracker

        Tracker(uri).log_checks(study.name, results)
        print(f"recorded in {uri}: one run per architecture, tag role = check")
    return 0 if all(s.passed for s in results) else EXIT_FAILED_TRIALS


def cmd_run(args: argparse.Namespace) -> int:
    """Every check that needs neither MLflow nor a worker comes first — the study, the devices, the store's file,
    the data — so bad input is said in seconds and nothing is created until all of it passes."""
    from ablate.run import interruptible

    with interruptible(exits_after=args.own_process):  # Ctrl-C and SIGTERM stop the run alike (see ablate.run's signals)
        return _run(args)


def _load_study(args: argparse.Namespace) -> tuple[tuple[str, ...], Study, list[Trial]]:
    """The study file read and expanded (every check on the spec, before torch or MLflow load), with the folders its
    factories are imported from."""
    from ablate.design import expand
    from ablate.spec import load_study

    import_paths = _make_factories_importable(args.study)  # before the study is read, as in plan
    study = load_study(args.study)
    return import_paths, study, expand(study)


def _data_dir(args: argparse.Namespace) -> Path:
    from ablate import datasets

    return Path(args.data_dir) if args.data_dir else datasets.default_data_dir()


def _check_data(study: Study, trials: list[Trial], data_dir: Path) -> None:
    """Every dataset the study trains on, read and checked whole: a bad file is one error before anything starts."""
    from ablate import datasets

    for dataset in sorted({t.settings.dataset for t in trials} | {study.info.dataset}):
        datasets.check_data(dataset, data_dir)


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import_paths, study, trials = _load_study(args)
    overrides = {"devices": _devices(args.devices) if args.devices else None,
                 "workers_per_device": args.workers_per_device, "max_workers": args.max_workers, "pack": args.pack,
                 "backend": args.backend, "address": args.address}
    execution = replace(study.execution, **{k: v for k, v in overrides.items() if v is not None})  # flags win

    from ablate.console import ConsoleReporter, print_failures, print_warnings
    from ablate.design import resident_needs
    from ablate.run import check_memory, placement
    from ablate.tracking import check_store, claims_label, claims_url, sqlite_path, store_is_new, store_label

    uri = args.tracking_uri or _default_uri()
    data_dir = _data_dir(args)
    claims = claims_url(uri, args.claims, args.storage)
    # Local: a GPU asked for and absent. Ray: installed, the cluster reachable, the store and claims its nodes reach.
    slots, _ = placement(execution, tracking_uri=uri, claims=claims)
    if execution.backend == "local":  # a cluster's nodes are not this machine's to check
        check_memory(slots, resident_needs(study, trials))  # too little memory
    check_store(uri, write=True)
    new_store = store_is_new(uri)
    _check_data(study, trials, data_dir)

    from ablate.run import start_worker_server

    if execution.backend == "local":
        start_worker_server()  # before MLflow loads and starts threads (see there)

    from ablate.console import print_report_table, terminal
    from ablate.report import build
    from ablate.run import run_search, run_study
    from ablate.tracking import Tracker

    reporter = ConsoleReporter()
    console = reporter.console
    console.print(f"study [bold]{study.name}[/] ({args.study})")
    console.print(f"store {store_label(uri)}{' (new: this run creates it)' if new_store else ''}")
    console.print(f"data  {data_dir.resolve()}")
    if not claims.startswith("sqlite") or sqlite_path(uri) is None:  # beside a SQLite store it goes without saying
        console.print(f"claims {claims_label(claims)}")
    print_warnings(console, study)
    try:
        tracker = Tracker(uri, claims)
        if study.search is not None:
            from ablate.search import default_storage

            storage = args.storage or default_storage(uri)
            summary = run_search(study, tracker, data_dir, execution, reporter, storage,
                                 command=args.command_line, import_paths=import_paths)
        else:
            summary = run_study(study, trials, tracker, data_dir, execution, reporter,
                                command=args.command_line, import_paths=import_paths)
    finally:
        reporter.close()
    _print_elsewhere(console, summary)
    for note in summary.notes:
        console.print(note)
    if summary.interrupted:
        print_failures(console, summary.failed)
        console.print(
            f"[yellow]{'Preempted (SIGTERM)' if summary.stop_reason == 'preempted' else 'Interrupted'}[/]: "
            f"{len(summary.finished)} trials finished and recorded; the running ones are marked KILLED. "
            f"Resume with: {args.command_line}"
        )
        return _interrupted_exit(summary.stop_reason)
    if not summary.finished and not summary.failed:
        console.print(f"All {summary.total} trials already done: nothing to train.")
    if study.search is not None and not build(uri, study.name)[0].runs.shape[0]:
        console.print("No configuration finished the search, so nothing was confirmed.")
        print_failures(console, summary.failed)
        return EXIT_FAILED_TRIALS if summary.failed else 0
    else:
        console.print(
            f"Trained {len(summary.finished)} trials in {summary.wall_seconds:.0f} s on {len(summary.slots)} worker(s); "
            f"{len(summary.failed)} failed; {summary.skipped} were already done."
        )
    print()
    print_report_table(terminal(), build(uri, study.name)[0])
    print()
    print_failures(console, summary.failed)
    _print_next_steps(console, uri, study.name, summary.experiment_id)
    return EXIT_FAILED_TRIALS if summary.failed else 0


def _print_elsewhere(console, summary) -> None:
    if summary.recovered:
        console.print(f"Recovered {len(summary.recovered)} run(s) a killed `ablate run` left RUNNING: marked FAILED "
                      "(reason interrupted), and their trials ran again.")
    if summary.running_elsewhere:
        console.print(f"{summary.running_elsewhere} trial(s) running in another invocation of this study: left to it; "
                      "run the same command again after it ends to train any it did not finish.")
    if summary.done_elsewhere:
        console.print(f"{summary.done_elsewhere} trial(s) were finished by another invocation meanwhile: not trained "
                      "again.")


def _interrupted_exit(reason: str) -> int:
    return EXIT_TERMINATED if reason == "preempted" else EXIT_INTERRUPTED


def _print_next_steps(console, uri: str, study: str, experiment_id: str) -> None:
    """How to see the runs and the table — for this store, whichever it is."""
    default = uri == _default_uri()
    store = "" if default else f" --tracking-uri {shlex.quote(uri)}"
    ui = "mlflow ui" if default else f"mlflow ui --backend-store-uri {shlex.quote(uri)}"
    from ablate.tracking import runs_url

    console.print(f"See the runs: {ui}    then open {runs_url(experiment_id)}")
    console.print(f"The table:    ablate report --study {shlex.quote(study)}{store}")


def _existing_store(args: argparse.Namespace, write: bool = False, study: str = "STUDY.toml") -> str:
    """The tracking URI of a command that reads what `ablate run` recorded: a missing SQLite store is one message
    (before MLflow loads, and without creating it), a broken one is check_store's."""
    from ablate.tracking import check_store, sqlite_path, store_label

    uri = args.tracking_uri or _default_uri()
    store = sqlite_path(uri)
    if store is not None and not store.exists():
        raise AblateError(f"no MLflow store at {store_label(uri)}; run `ablate run {study}` here first, or pass "
                          "--tracking-uri")
    check_store(uri, write=write)
    return uri


def cmd_report(args: argparse.Namespace) -> int:
    """The cheap checks first (format, the store's file), so that a missing store is said before MLflow loads."""

    suffix = Path(args.out).suffix.lstrip(".") if args.out else "md"
    fmt = args.format or {"tex": "latex"}.get(suffix, suffix)
    if fmt not in ("md", "csv", "json", "latex"):
        raise AblateError(f"--out {args.out}: cannot tell the format from '.{suffix}'; pass --format md, csv, json or latex")
    uri = _existing_store(args)
    if os.getcwd() not in sys.path:  # a dataset factory the figures call again, as `ablate run` found it
        sys.path.insert(0, os.getcwd())

    from ablate.report import build, column_keys, render

    column_keys(args.columns)  # before anything is read
    figures = Path(args.out).resolve().parent if args.out and fmt == "md" and not args.no_figures else None
    by = [b.strip() for b in args.by.split(",")] if args.by else None
    reports = build(uri, args.study, figures, args.baseline, args.metric)
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
    for report in reports:
        for path in report.figures:
            print(f"wrote {path}")
        if report.figures and report.parent_run_id:
            print(f"logged {len(report.figures)} figure(s) of {report.name} to its latest run {report.parent_run_id} "
                  "(artifacts, folder figures/)")


def cmd_export(args: argparse.Namespace) -> int:

    if args.out is None and not args.register:
        raise AblateError("ablate export: say where the models go: --out DIR, --register, or both")
    uri = _existing_store(args, write=args.register)

    from ablate.export import export_models

    for item in export_models(uri, args.study, args.arm, Path(args.out) if args.out else None, args.register,
                              force=args.force, trust_pickles=args.trust_pickles):
        where = [f"wrote {item.folder}/ ({', '.join(item.files)})"] if item.folder else []
        where += [f"registered as {item.registered}"] if item.registered else []
        print(f"{item.arm}: run {item.run_id}, test accuracy {100 * item.test_accuracy:.2f}%: {'; '.join(where)}")
    return 0


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

    made = followup(uri, study, args.storage or default_storage(uri), args.name, seeds, args.command_line)
    if out is None:
        sys.stdout.write(made.text)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(made.text)
    print(f"winner: {made.winner.name} ({study.search.settings.objective} {made.objective:.4f} on the confirm seeds)")
    if made.base_better:
        print("note: the base settings did better on validation; the study says so in its header")
    for change in made.changes:
        print(f"  {change.arm}: {change.describe()}")
    print(f"wrote {out}: run it with `ablate run {out}`")
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


# ---------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    own_process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    args = argparse.Namespace(debug="--debug" in argv, command=None, command_line="ablate")
    debug_set = False
    try:
        _startup.handing_over()  # Ctrl-C raises KeyboardInterrupt from here on, handled below
        parser = build_parser()
        args = parser.parse_args(argv)
        args.debug = getattr(args, "debug", False)
        args.own_process = own_process  # the process ends when main returns (not a caller's in-process call)
        args.command_line = "ablate " + " ".join(shlex.quote(a) for a in argv if a != "--debug")
        debug_set = _debug_logging(args.debug)
        _check_paths(args)
        code = args.func(args)
        if own_process and code in (EXIT_INTERRUPTED, EXIT_TERMINATED):  # a run that recorded its interruption
            _startup.forget_unhandled_interrupt()
        return code
    except AblateError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ablate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # before a run could record anything, or a command that records nothing
        if own_process:  # the process ends now: a second Ctrl-C must not cut this line short with a traceback
            import signal

            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _startup.forget_unhandled_interrupt()
        # Which signal it was (a plain KeyboardInterrupt may stand for SIGTERM), when ablate.run's handlers saw one;
        # not imported for the question: a Ctrl-C during the imports would wait a tenth of a second more for it.
        signals = sys.modules.get("ablate.run._signals")
        code = signals.as_interrupted(exc).exit_code if signals is not None else EXIT_INTERRUPTED
        if args.debug:
            traceback.print_exc()
        resume = f"; resume with: {args.command_line}" if args.command == "run" else ""
        print(f"ablate: {'stopped by SIGTERM' if code != EXIT_INTERRUPTED else 'interrupted'}{resume}", file=sys.stderr)
        return code
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if debug_set and not own_process:  # a caller's in-process call: its environment as it was
            os.environ.pop(DEBUG_ENV, None)


DEBUG_ENV = "ABLATE_DEBUG"  # ablate.tracking's _open reads it (MLflow is not imported here)


def _debug_logging(debug: bool) -> bool:
    """--debug: MLflow's, alembic's and SQLAlchemy's own log records of a store failure are shown, in this process
    and the workers it starts (ablate.tracking's _open quiets them otherwise: ablate reports the failure itself).
    Whether it set the variable."""
    if not debug or os.environ.get(DEBUG_ENV):
        return False
    os.environ[DEBUG_ENV] = "1"
    return True


def _check_paths(args: argparse.Namespace) -> None:
    """Before any command runs: the tracking URI (scheme, form, driver, a looping link; StoreError, exit 3), and the
    file that report or followup writes with --out (a looping link, a folder; exit 2)."""
    from ablate.tracking._uri import check_tracking_uri, symlink_loops

    if "tracking_uri" in args:
        check_tracking_uri(args.tracking_uri or _default_uri())  # (an empty one means the default, as it always did)
    out = getattr(args, "out", None)
    if out and args.command in ("report", "followup"):
        path = Path(out)
        if symlink_loops(path):
            raise AblateError(f"--out {out}: is a symbolic link that loops back on itself; remove it or pass another "
                              "--out")
        if path.is_dir():
            example = path / ("table.md" if args.command == "report" else "study.toml")
            raise AblateError(f"--out {out}: is a folder; name the file to write, e.g. --out {example}")
