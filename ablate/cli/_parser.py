"""The command line's grammar: every command, its flags and their help, and nothing else."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

import ablate
from ablate._shell import command

DESCRIPTION = """\
ablate runs ablation studies of neural networks from one TOML file: it expands the
study into trials, trains them, logs every run to MLflow and writes comparison tables.

"""


def _examples() -> str:
    """The first commands, as they run here (ablate._shell: a virtual environment not activated names its path)."""
    ablate, mlflow = command("ablate"), command("mlflow")
    rows = [(f"{ablate} plan studies/linearity.toml", "what would run (no training)"),
            (f"{ablate} run studies/linearity.toml", "train every trial not already done"),
            (f"{mlflow} ui", "browse the runs (same folder)"),
            (f"{ablate} report --out results/table.md", "the comparison table")]
    width = max(len(line) for line, _ in rows) + 4
    return "".join(f"  {line.ljust(width)}{what}\n" for line, what in rows)

EPILOG = """\
exit codes: 0 success; 1 some trial failed (the others are recorded); 2 bad input
(study file, flags, data files) with one message naming the problem; 3 the tracking store
or Optuna storage failed or cannot be used (corrupt, read-only, full, unreachable, another
program's experiment), nothing recorded changed; 130 interrupted (Ctrl-C); 143 stopped by
SIGTERM (preempted). Run the same command again to resume."""


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ 1, not {text!r}")
    return int(text)


# ablate.export's ONNX_OPSET, said here without importing torch (tests/cli checks they agree).
ONNX_OPSET = 18
EXPORT_FORMATS = ("pt2", "onnx")


def _formats(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",")))
    unknown = [part for part in chosen if part not in EXPORT_FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{', '.join(map(repr, unknown)) or repr(text)}: not a format; choose pt2, "
                                         "onnx or both (pt2,onnx)")
    return chosen


def _pack_size(text: str) -> int | str:
    return "auto" if text == "auto" else _positive(text)


def build_parser(handlers: Mapping[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """The parser of every command; `handlers` maps a command's name to the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="ablate", description=DESCRIPTION + _examples(), epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<current folder>/mlflow.db, which "
             "`mlflow ui` here shows)",
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
    run.set_defaults(func=handlers["run"])

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
    check.set_defaults(func=handlers["check"])

    plan = commands.add_parser(
        "plan", parents=[tracking], help="list the trials a study expands into, and which the store already holds",
        description="Dry run: validate the study and list its trials (hash, stage, seed, the settings that "
        "differ between trials, parameter count) and, when the tracking store exists, each trial's status there "
        "(done, failed, killed, running, or to do); then the dataset: the training, validation and test examples "
        "the trials use (after the validation split, train_limit and test_limit) and whether its files are in the "
        "data folder (present, downloaded by `ablate run`, or missing: which files to put where).",
    )
    plan.add_argument("study", metavar="STUDY.toml", help="the study file")
    plan.add_argument("--data-dir", default=None, metavar="DIR",
                      help="folder where the datasets are looked for (default: $ABLATE_DATA_DIR, else ./data); plan "
                      "says whether their files are there, without reading them")
    plan.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    plan.add_argument("--storage", default=None, metavar="URL|FILE",
                      help="search studies: the Optuna storage to read (default: optuna-journal.log beside the store)")
    plan.set_defaults(func=handlers["plan"])

    report = commands.add_parser(
        "report", parents=[tracking], help="write the comparison table from the runs in MLflow",
        description="Read the finished runs back from MLflow and write one comparison table per study. The figures "
        "read the data and import the study's factories where `ablate run` did: it records its data folder and the "
        "study file's folder; a recorded folder is imported from only when it is your own (not Python's or an "
        "installed package's, owned by you and not writable by every user).",
    )
    report.add_argument("--study", default=None, metavar="NAME", help="one study (default: every study in the store)")
    report.add_argument("--out", default=None, metavar="FILE",
                        help="write here instead of standard output; a markdown FILE gets its PNG figures beside it, "
                        "named after it (results/t.md: results/t-curves.png, t-confusion.png, …; t-<study>-curves.png, "
                        "… when the report holds several studies), each also logged to its study's latest parent run "
                        "as figures/<study>-curves.png, …")
    report.add_argument("--format", choices=("md", "csv", "json", "latex"), default=None,
                        help="default: from --out's suffix (.md, .csv, .json, .tex), else md")
    report.add_argument("--metric", choices=("test_accuracy", "val_accuracy", "test_loss", "val_loss"),
                        default="test_accuracy", help="the primary metric of the statistics (default: test_accuracy)")
    report.add_argument("--baseline", default=None, metavar="ARM",
                        help="the arm deltas are taken against (default: a ladder's first stage, an ablation's "
                        "baseline, a grid's first point, a search's best); needs --study")
    report.add_argument("--no-figures", action="store_true", help="skip the PNG figures of a markdown --out")
    report.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="folder holding the datasets, for the figures that show images (default: $ABLATE_DATA_DIR, else the "
        "data folder the study's latest `ablate run` recorded, else ./data); a figure that cannot be drawn is named, "
        "with why, on stderr and in the markdown",
    )
    report.add_argument("--columns", default="default", metavar="default|all|A,B",
                        help="table columns of md and latex: default (arm, changes, n, metric ± std, 95%% CI, Δ vs "
                        "baseline, p (Holm), params, reference), all, or a comma list of arm, changes, model, params, "
                        "macs, n, metric, ci, delta, p, val_acc, epochs, test_loss, train_time, samples_s, peak_mem, "
                        "reference, vs_reference (csv and json always hold every number)")
    report.add_argument("--by", default=None, metavar="A,B",
                        help="add the interaction table of two settings, e.g. --by model.dropout,model.batchnorm")
    report.set_defaults(func=handlers["report"])

    export = commands.add_parser(
        "export", parents=[tracking], help="write a study's saved models as files that load without MLflow",
        description="For each arm of the study (or --arm), the run whose model stands for it (the arm's best by "
        "test accuracy, see [tracking] models): the network its settings rebuild with its saved weights (nothing from "
        "the store is unpickled), checked against the scores it was saved with, then written to DIR/<arm>/ as a "
        "state dict, ablate.json (the resolved settings, the input it takes, the class names), a torch.export "
        "program model.pt2 (TorchScript model.ts where the network does not export) and/or an ONNX file model.onnx "
        "checked with onnxruntime (--format), and a README saying how to load each; --register also registers it in "
        "MLflow's model registry. An arm folder that already holds files is refused without --force; export follows "
        "no symbolic link out of DIR.",
    )
    export.add_argument("--study", required=True, metavar="NAME", help="the study (its [study] name)")
    export.add_argument("--arm", default=None, metavar="ARM", help="one arm (default: every arm with a saved model)")
    export.add_argument("--out", default=None, metavar="DIR", help="write the models here, one folder per arm")
    export.add_argument("--format", type=_formats, default=("pt2",), metavar="pt2|onnx|pt2,onnx",
                        help="the program written beside the state dict: pt2 (default), a torch.export program "
                        "(TorchScript model.ts where the network does not export); onnx, model.onnx at ONNX opset "
                        f"{ONNX_OPSET} with a dynamic batch axis, written only once onnxruntime gives torch's scores "
                        "within 1e-5 on the dataset's first 100 test images (in --data-dir; else on the 3 random "
                        "images the model was saved with), in a batch of 1 and one of 100 (needs pip install "
                        "'ablate[onnx]'); pt2,onnx: both")
    export.add_argument("--data-dir", default=None, metavar="DIR",
                        help="where --format onnx finds the test images it checks the file on (default: "
                        "$ABLATE_DATA_DIR, else ./data)")
    export.add_argument("--register", action="store_true",
                        help="register each model in MLflow's model registry as <study>-<arm> (a new version)")
    export.add_argument("--force", action="store_true",
                        help="write into arm folders that already hold files: replace the files export writes there "
                        "(state_dict.pt, ablate.json, model.pt2, model.ts, model.onnx, README.md), keep the others")
    export.add_argument("--trust-pickles", action="store_true",
                        help="trust everyone who can write to the store: load a model that exists only as a pickle "
                        "and call a factory its settings name outside your own code (either may run any code)")
    export.set_defaults(func=handlers["export"])

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
    followup.add_argument("--point", default=None, metavar="topN|TRIAL",
                          help="ablate this confirmed configuration instead of the winner: topN as the report names "
                          "it, or its Optuna trial number (required for a search of several objectives: a point of "
                          "its Pareto front)")
    followup.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    followup.add_argument("--storage", default=None, metavar="URL|FILE",
                          help="the Optuna storage (default: optuna-journal.log beside the store)")
    followup.set_defaults(func=handlers["followup"])

    schema = commands.add_parser(
        "schema", help="print every key a study file accepts, with types and defaults (markdown)"
    )
    schema.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    schema.set_defaults(func=handlers["schema"])
    return parser
