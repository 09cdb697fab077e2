"""`ablate run` and `ablate check`: what they print around the library's work (ablate.run's prepare, run_study,
run_search; ablate.check's check_study)."""

from __future__ import annotations

import argparse
import shlex

from ablate._shell import command, installed, own
from ablate.errors import EXIT_FAILED_TRIALS, EXIT_INTERRUPTED, EXIT_TERMINATED, AblateError


def _devices(text: str) -> str | tuple[int, ...]:
    if text in ("auto", "cpu"):
        return text
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise AblateError(f"--devices {text}: use auto, cpu or GPU indices such as 0,2")
    return tuple(int(p) for p in parts)


def cmd_run(args: argparse.Namespace) -> int:
    """Every check that needs neither MLflow nor a worker comes first — the study, the devices, the store's file,
    the data (ablate.run's prepare) — so bad input is said in seconds and nothing is created until all of it
    passes."""
    from ablate.run import interruptible

    with interruptible(exits_after=args.own_process):  # Ctrl-C and SIGTERM stop the run alike (ablate.run's signals)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ablate._timeline import mark
    from ablate.run import load, prepare

    mark("ablate.run imported")
    overrides = {"devices": _devices(args.devices) if args.devices else None,
                 "workers_per_device": args.workers_per_device, "max_workers": args.max_workers, "pack": args.pack,
                 "backend": args.backend, "address": args.address}
    loaded = load(args.study)
    mark("study loaded")
    prepared = prepare(loaded, tracking_uri=args.tracking_uri, claims=args.claims, storage=args.storage,
                       data_dir=args.data_dir, overrides=overrides)

    from ablate.console import ConsoleReporter, print_warnings
    from ablate.run import run_search, run_study
    from ablate.tracking import claims_label, sqlite_path, store_label

    study, uri, claims = prepared.study, prepared.uri, prepared.claims
    reporter = ConsoleReporter()
    console = reporter.console
    console.print(f"study [bold]{study.name}[/] ({args.study})")
    console.print(f"store {store_label(uri)}{' (new: this run creates it)' if prepared.new_store else ''}")
    console.print(f"data  {prepared.data_dir.resolve()}")
    if not claims.startswith("sqlite") or sqlite_path(uri) is None:  # beside a SQLite store it goes without saying
        console.print(f"claims {claims_label(claims)}")
    print_warnings(console, study)
    try:
        run = run_search if study.search is not None else run_study
        summary = run(prepared, reporter, command=args.command_line)
    finally:
        reporter.close()
    return _print_end(console, args, prepared, summary, reporter.shown_notes)


def _print_end(console, args: argparse.Namespace, prepared, summary, shown: list[str]) -> int:
    """What the run did, the table of the study, and where to look next; the exit code."""
    from ablate.console import print_failures, print_report_table, terminal
    from ablate.report import build

    _print_elsewhere(console, summary)
    for note in summary.notes:
        if note not in shown:  # the notes of adaptive rounds were shown as they happened
            console.print(note)
    if summary.interrupted:
        print_failures(console, summary.failed)
        console.print(
            f"[yellow]{'Preempted (SIGTERM)' if summary.stop_reason == 'preempted' else 'Interrupted'}[/]: "
            f"{len(summary.finished)} trials finished and recorded; the running ones are marked KILLED. "
            f"Resume with: {resume_hint(args.command_line)}"
        )
        return EXIT_TERMINATED if summary.stop_reason == "preempted" else EXIT_INTERRUPTED
    if not summary.finished and not summary.failed:
        console.print(f"All {summary.total} trials already done: nothing to train.")
    report = build(prepared.uri, prepared.study.name)[0]  # read once: the store is read whole
    if prepared.study.search is not None and not report.runs.shape[0]:
        console.print("No configuration finished the search, so nothing was confirmed.")
        print_failures(console, summary.failed)
        return EXIT_FAILED_TRIALS if summary.failed else 0
    console.print(
        f"Trained {len(summary.finished)} trials in {summary.wall_seconds:.0f} s on {len(summary.slots)} worker(s); "
        f"{len(summary.failed)} failed; {summary.skipped} were already done."
    )
    print()
    print_report_table(terminal(), report)
    print()
    print_failures(console, summary.failed)
    _print_next_steps(console, prepared.uri, prepared.study.name, summary.experiment_id, prepared.storage)
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


def _print_next_steps(console, uri: str, study: str, experiment_id: str, storage: str | None = None) -> None:
    """How to see the runs, the table and a search's Optuna study — for this store, whichever it is, with the
    commands as they run here (ablate._shell: a virtual environment not activated is named by its path)."""
    from ablate.tracking import default_uri, runs_url

    default = uri == default_uri()
    store = "" if default else f" --tracking-uri {shlex.quote(uri)}"
    ui = f"{command('mlflow')} ui" + ("" if default else f" --backend-store-uri {shlex.quote(uri)}")
    lines = [f"See the runs: {ui}    then open {runs_url(experiment_id)}",
             f"The table:    {command('ablate')} report --study {shlex.quote(study)}{store}"]
    if storage is not None:
        missing = "" if installed("optuna-dashboard") else f" ({own('pip')} install optuna-dashboard)"
        lines.append(f"The search:   {command('optuna-dashboard')} {shlex.quote(storage)}{missing}")
    for line in lines:  # never wrapped: a command cut in two does not paste
        console.print(line, markup=False, soft_wrap=True)


def resume_hint(command_line: str) -> str:
    """The command that resumes a run (`command_line` starts with "ablate", as recorded), as it runs here."""
    return command("ablate") + command_line.removeprefix("ablate")


def cmd_check(args: argparse.Namespace) -> int:
    """The study and its data are checked as `run` checks them, before anything is trained or recorded."""
    from ablate.run import check_data, data_folder, load
    from ablate.tracking import check_store, store_uri

    loaded = load(args.study)
    data_dir = data_folder(args.data_dir)
    uri = store_uri(args.tracking_uri)
    if not args.no_record:
        check_store(uri, write=True)
    check_data(loaded.study, loaded.trials, data_dir)
    from ablate.check import check_study

    results = check_study(loaded.trials, data_dir)
    for stage in results:
        print(f"{stage.stage} (seed {stage.seed}): {'passed' if stage.passed else 'FAILED'}")
        for item in stage.checks:
            print(f"  {item.line()}")
    if not args.no_record:
        from ablate.tracking import Tracker

        Tracker(uri).log_checks(loaded.study.name, results)
        print(f"recorded in {uri}: one run per architecture, tag role = check")
    return 0 if all(s.passed for s in results) else EXIT_FAILED_TRIALS
