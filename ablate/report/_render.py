"""The table as the reader sees it: markdown (with footnote, figures, invocations), CSV, JSON and LaTeX."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ablate.errors import AblateError
from ablate.report._effects import effect_lines
from ablate.report._judge import verdict_cells, verdict_note
from ablate.report._pareto import pareto_lines
from ablate.report._report import CHANGES_HEADING, PRIMARY_METRICS, StudyReport, fmt


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


def _bold_best_per_loss(cells: list[str], values: pd.Series, losses: pd.Series) -> list[str]:
    """A loss column's best in bold among the arms trained with the same loss only: an MSE of 0.01 is not better
    than a cross-entropy of 0.27, only smaller."""
    cells = list(cells)
    for loss in losses.unique():
        rows = [i for i, value in enumerate(losses) if value == loss]
        marked = _bold_best([cells[i] for i in rows], values.iloc[rows], higher_is_better=False)
        for i, cell in zip(rows, marked):
            cells[i] = cell
    return cells


def _count(value: float) -> str:
    if value is None or pd.isna(value):
        return "—"
    value = float(value)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


# The names `--columns` takes, in table order; DEFAULT_COLUMNS is what a reader takes in at a glance (and pastes),
# `all` every column. Keys absent from a report (no references, no early stopping) are skipped.
COLUMN_KEYS = ("arm", "changes", "model", "params", "macs", "n", "metric", "ci", "delta", "p", "verdict", "val_acc",
               "epochs", "test_loss", "train_time", "samples_s", "peak_mem", "reference", "vs_reference")
DEFAULT_COLUMNS = ("arm", "changes", "n", "metric", "ci", "delta", "p", "verdict", "params", "reference")


def column_keys(spec: str) -> tuple[str, ...]:
    """`default`, `all` or a comma list of COLUMN_KEYS (in the order given; `arm` always first)."""
    if spec == "default":
        return DEFAULT_COLUMNS
    if spec == "all":
        return COLUMN_KEYS
    keys = tuple(k.strip() for k in spec.split(",") if k.strip())
    unknown = [k for k in keys if k not in COLUMN_KEYS]
    if unknown:
        raise AblateError(f"--columns {spec}: unknown column {unknown[0]!r}; use default, all or a comma list of "
                          f"{', '.join(COLUMN_KEYS)}")
    return ("arm", *(k for k in keys if k != "arm"))


def _key_of(header: str, report: StudyReport) -> str:
    if header == PRIMARY_METRICS[report.metric]:  # e.g. "Test loss" when ranked by test loss
        return "metric"
    fixed = {"Stage": "arm", "Arm": "arm", "Model": "model", "Params": "params", "MACs": "macs", "n": "n",
             "95% CI": "ci", "p (Holm)": "p", "Val acc (%)": "val_acc",
             "Test loss": "test_loss", "Train time (s)": "train_time", "Samples/s": "samples_s",
             "Reference (%)": "reference", "Ours − ref (pts)": "vs_reference"}
    if header in fixed:
        return fixed[header]
    if header in CHANGES_HEADING.values():
        return "changes"
    for prefix, key in (("Δ vs", "delta"), ("Verdict", "verdict"), ("Epochs run", "epochs"),
                        ("Worker peak", "peak_mem"), ("Peak GPU", "peak_mem")):
        if header.startswith(prefix):
            return key
    raise KeyError(header)


def summary_frame(report: StudyReport, columns: str = "all") -> pd.DataFrame:
    """The table as the reader sees it (strings), shared by markdown, LaTeX and the terminal; `columns` as for
    column_keys."""
    frame = _full_frame(report)
    by_key = {_key_of(header, report): header for header in frame.columns}
    return frame[[by_key[key] for key in column_keys(columns) if key in by_key]]


def _peak_memory_header(report: StudyReport) -> str:
    """What the peak-memory column measures: the trial's own peak allocation on a GPU, but on the CPU the worker
    process's peak resident memory (its whole process: interpreter, torch, the resident dataset, every trial so far)."""
    devices = set(report.runs["device"].dropna()) if "device" in report.runs else set()
    if devices and all(str(d).startswith("cuda") for d in devices):
        return "Peak GPU alloc (MB)"
    return "Worker peak RSS (MB)"


def _full_frame(report: StudyReport) -> pd.DataFrame:
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
    means = [fmt(m, digits) + (f" ± {fmt(sd, digits)}" if not pd.isna(sd) else "")
             for m, sd in zip(table[f"{metric}_mean"], table[f"{metric}_std"])]
    columns[label] = (_bold_best(means, table[f"{metric}_mean"], higher) if higher
                      else _bold_best_per_loss(means, table[f"{metric}_mean"], table["loss"]))
    columns["95% CI"] = [f"[{fmt(lo, digits)}, {fmt(hi, digits)}]" if not pd.isna(lo) else "—"
                         for lo, hi in zip(table["ci_low"], table["ci_high"])]
    unit = " (pts)" if higher else ""
    columns[f"Δ vs {base}{unit}"] = [
        "—" if i == report.baseline else fmt(d, digits, True) + (" *" if sig else "")
        for i, (d, sig) in enumerate(zip(table["delta_vs_baseline"], table["significant"]))
    ]
    columns["p (Holm)"] = ["—" if pd.isna(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001") for p in table["p_holm"]]
    if "verdict" in table:
        columns[f"Verdict (±{report.judging.margin:g}{unit[:-1].replace('(', '')})"] = verdict_cells(table)
    if metric != "val_accuracy":
        columns["Val acc (%)"] = _bold_best([fmt(v, 2) for v in table["val_accuracy_mean"]],
                                            table["val_accuracy_mean"], True)
    if _stopped_early(report):
        columns["Epochs run / tested"] = [f"{fmt(r, 1)} / {fmt(t, 1)}"
                                          for r, t in zip(table["epochs_run_mean"], table["tested_epoch_mean"])]
    if metric != "test_loss":
        columns["Test loss"] = _bold_best_per_loss([fmt(v, 4) for v in table["test_loss_mean"]],
                                                   table["test_loss_mean"], table["loss"])
    columns["Train time (s)"] = _bold_best([fmt(v, 1) for v in table["train_seconds_mean"]],
                                           table["train_seconds_mean"], False)
    columns["Samples/s"] = _bold_best([_count(v) for v in table["throughput_mean"]], table["throughput_mean"], True)
    if table["peak_memory_mb_mean"].notna().any():
        columns[_peak_memory_header(report)] = [fmt(v, 0) for v in table["peak_memory_mb_mean"]]
    if _has_reference(report):
        columns["Reference (%)"] = ["—" if v is None or pd.isna(v) else f"{v:g}" for v in table["reference"]]
        columns["Ours − ref (pts)"] = [
            fmt(m - r, 2, True) if r is not None and not pd.isna(r) else "—"
            for m, r in zip(table["test_accuracy_mean"], table["reference"])
        ]
    return pd.DataFrame(columns)


def markdown_table(report: StudyReport, columns: str = "default") -> str:
    return summary_frame(report, columns).to_markdown(index=False, disable_numparse=True)


def latex_table(report: StudyReport, columns: str = "default") -> str:
    """A booktabs table (needs \\usepackage{booktabs}); bold and significance marks carried over."""
    frame = summary_frame(report, columns)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith(("Changes", "Search result"))])

    def tex(text: object) -> str:
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
        "value of a column (of a loss column, among the arms trained with the same loss only). Val acc, test loss, "
        "train time: means over the seeds; val acc is that of the tested "
        "weights; each trial's test loss is its own training loss (MSE or cross-entropy, never smoothed). Train "
        "time: seconds of training and per-epoch validation per trial, MLflow logging excluded; samples/s: "
        "training examples per second of it. MACs: multiply-accumulates of one forward pass of one image."
    )
    if "verdict" in report.table:
        text += " " + verdict_note(report.judging, arm, base, len(report.table) - 1,
                                   " pts" if report.metric.endswith("accuracy") else "")
    if _stopped_early(report):
        text += (" Epochs run / tested: means over the seeds of the epochs trained and of the epoch whose weights"
                 " were tested.")
    if _has_reference(report):
        text += f" Reference: the published single-run figure the {arm} reproduces."
    packed = report.runs[report.runs["pack_size"] > 1] if "pack_size" in report.runs else report.runs.iloc[:0]
    if len(packed):
        text += (f" {len(packed)} of the {len(report.runs)} trials trained packed ([execution] pack, up to "
                 f"{packed['pack_size'].max()} per network): a packed trial's train time is its whole pack's, so its "
                 "samples/s counts its own examples only.")
    return text


def _followup_pick(report: StudyReport) -> str:
    """The confirmed configuration `ablate followup` would pick (best mean validation accuracy over the confirm seeds,
    never test), said with its score; '' when the objective is not validation accuracy or nothing is confirmed."""
    table = report.table
    if report.search.get("objective") != "val_accuracy" or "val_accuracy_mean" not in table or not len(table):
        return ""
    arms = table[~table["stage"].str.startswith("base")].dropna(subset=["val_accuracy_mean"])
    if not len(arms):
        return ""
    best = arms.loc[arms["val_accuracy_mean"].idxmax()]
    return (f"'{best['stage']}', the best mean validation accuracy over the confirm seeds "
            f"({best['val_accuracy_mean']:.2f}%)")


def _search_lines(report: StudyReport) -> list[str]:
    search = report.search
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(search["counts"].items()))
    lines = [f"### Search ({search['objective']})", "", f"Optuna trials: {counts} (storage `{search['storage']}`).", ""]
    if search.get("front") is not None:  # several objectives
        lines += pareto_lines(search)
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
    if "REJECTED" in search["counts"]:
        lines[-1] += (" Rejected: points ruled out before training (over a budget of the search, max_params or "
                      "max_macs, or a network that does not fit the data); they do not count towards its trials.")
    if "INTERRUPTED" in search["counts"]:
        lines[-1] += " Interrupted: trials cut off by a stopped run; their points were trained again."
    pick = _followup_pick(report)
    if pick:
        lines[-1] += f" `ablate followup` ablates {pick}."
    if search.get("base"):
        lines[-1] += (" `base` is the unsearched settings re-trained on the same seeds: Δ and p compare each "
                      "configuration with it, seed for seed.")
    return lines


def _finished_line(report: StudyReport) -> str:
    if report.judging.adaptive is None:
        return f"{len(report.runs)} of {report.planned} planned trials finished."
    low, high = report.judging.adaptive
    return (f"{len(report.runs)} trials finished, with adaptive seeds: {low} to {high} per arm, each arm until its "
            f"verdict was known or it had {high} seeds ({report.planned} trials at most).")


def markdown_section(report: StudyReport, by: list[str] | None = None, columns: str = "default") -> str:
    lines = [f"## {report.name}", ""]
    if report.description:
        lines += [report.description, ""]
    lines += [_finished_line(report), "", markdown_table(report, columns), ""]
    if report.described:  # what the study file says each arm is, in the table's order
        lines += [*(f"- **{name}**: {text}" for name, text in report.described.items()), ""]
    lines.append(_footnote(report))
    shown = [p for p in report.figures if p != (report.search or {}).get("figure")]  # that one has its own place
    if shown:
        lines += ["", " ".join(f"![{p.stem}]({p.name})" for p in shown)]
    if report.not_drawn:
        lines += ["", "Figures not drawn:", "", *_not_drawn_lines(report)]
    lines += _per_class_lines(report) + _model_lines(report)
    effects = effect_lines(report, by)
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
            if inv.get("torch_version"):
                bits.append(f"torch {inv['torch_version']}")
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


def _not_drawn_lines(report: StudyReport) -> list[str]:
    """One item per reason, naming the figures it kept from being drawn."""
    by_reason: dict[str, list[str]] = {}
    for figure, why in report.not_drawn:
        by_reason.setdefault(why, []).append(figure)
    return [f"- {', '.join(figures)} — {why}" for why, figures in by_reason.items()]


def _per_class_lines(report: StudyReport) -> list[str]:
    """Test accuracy per class and arm (%, mean over the arm's seeds), the baseline's row marked: computed with the
    figures (it reads every run's test predictions)."""
    table = report.per_class
    if table is None or not len(table):
        return []
    names = report.class_names or tuple(str(c) for c in table.columns)
    baseline = str(report.table["stage"].iloc[report.baseline])
    lines = ["", f"Test accuracy per class (%, mean over seeds; **{baseline}** is the baseline):", "",
             "| arm | " + " | ".join(names[c] for c in table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
    for arm, row in table.iterrows():
        label = f"**{arm}**" if arm == baseline else str(arm)
        lines.append(f"| {label} | " + " | ".join(fmt(100 * v, 1) for v in row) + " |")
    return lines


def _model_lines(report: StudyReport) -> list[str]:
    """Where each arm's saved model is, and the line that loads it."""
    if not report.models:
        return []
    listed = ", ".join(f"{arm} `{report.models[arm]}`" for arm in report.table["stage"] if arm in report.models)
    return ["", f"Saved models (each arm's best run): write them as files with `ablate export --study {report.name} "
            "--out DIR` (weights loaded with weights_only=True); a network that torch.exports is also an MLflow logged "
            "model of its run, listed in the experiment's Models tab, which loads with "
            "`mlflow.pytorch.load_model(\"runs:/<run>/model\")` — it unpickles, so only from a store you trust — and "
            f"takes float32 pixel values (0-255 for uint8 images). Runs: {listed}."]


def render(reports: list[StudyReport], fmt: str, by: list[str] | None = None, columns: str = "default") -> str:
    """Markdown and LaTeX show `columns` (column_keys); CSV and JSON hold every number of the table."""
    if fmt == "md":
        return "\n".join(markdown_section(r, by, columns) for r in reports)
    if fmt == "latex":
        return "\n".join(latex_table(r, columns) for r in reports)
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

