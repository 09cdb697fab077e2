"""A search of several objectives in the report: its Pareto front as a table and a figure, each front point with the
test accuracy the confirm phase measured for it (mean, standard deviation and 95% t-interval over the confirm
seeds)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from ablate.report._draw import FigureFiles, saved
from ablate.report._stats import mean_interval

# A confirm arm names the Optuna trial whose point it re-trains: 'top2 (trial 7)', 'base = top1 (trial 3)'.
_TRIAL_OF_ARM = re.compile(r"\(trial (\d+)\)$")
AXIS_LABELS = {"val_accuracy": "validation accuracy (%)", "val_loss": "validation loss", "params":
               "trainable parameters", "macs": "multiply-accumulates per image", "train_seconds": "training time (s)"}


def confirmed_by_trial(runs: pd.DataFrame | None) -> dict[int, tuple[str, pd.Series]]:
    """Optuna trial number → (the confirm arm that re-trained its point, that arm's test accuracies, one per seed)."""
    if runs is None or not len(runs) or "test_accuracy" not in runs:
        return {}
    confirmed = {}
    for stage, rows in runs.groupby("stage"):
        found = _TRIAL_OF_ARM.search(str(stage))
        if found:
            confirmed[int(found[1])] = (str(stage), rows["test_accuracy"].dropna().astype(float))
    return confirmed


def _test_columns(accuracies: pd.Series | None) -> dict[str, str]:
    if accuracies is None or not len(accuracies):
        return {"test accuracy (%)": "not confirmed", "95% CI": "—", "seeds": "0"}
    percent = 100 * accuracies
    spread = f" ± {percent.std(ddof=1):.2f}" if len(percent) > 1 else ""
    low, high = mean_interval(percent)
    interval = f"[{low:.2f}, {high:.2f}]" if not math.isnan(low) else "— (one seed)"
    return {"test accuracy (%)": f"{percent.mean():.2f}{spread}", "95% CI": interval, "seeds": str(len(percent))}


def pareto_summary(study, info: dict, counts: dict, figures: FigureFiles | None, runs: pd.DataFrame | None) -> dict:
    """The Optuna side of a multi-objective search: counts, the front as a table (each point's objectives and its
    confirmed test accuracy), the validation objective's importances, the Pareto figure (drawn where `figures`
    says)."""
    import warnings

    import optuna

    from ablate.search import front, objective_text

    names = list(study.metric_names or [f"objective {i + 1}" for i in range(len(study.directions))])
    points = front(study)
    confirmed = confirmed_by_trial(runs)
    rows = []
    for trial in points:
        arm, accuracies = confirmed.get(trial.number, ("—", None))
        rows.append({"point": arm.split(" = ")[-1], "Optuna trial": trial.number,
                     **{name: objective_text(name, value) for name, value in zip(names, trial.values)},
                     **_test_columns(accuracies),
                     **{k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in trial.params.items()}})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
    except (ValueError, RuntimeError):  # too few complete trials, or a single-valued space
        importances = {}
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    figure = None
    if figures is not None and complete:
        figure = figures.path("pareto")
        pareto_figure(complete, points, names, [d.name.lower() for d in study.directions], confirmed, figure)
    return {"counts": counts, "best": pd.DataFrame(), "importances": importances, "figure": None,
            "objective": ", ".join(names), "storage": info["storage"], "base": bool(info.get("confirm_base")),
            "front": pd.DataFrame(rows).fillna("—"), "pareto_figure": figure, "names": names,
            "directions": [d.name.lower() for d in study.directions], "complete": len(complete),
            "confirm_seeds": info.get("confirm_seeds") or [], "study_file": study.user_attrs.get("study_file")}


def pareto_lines(search: dict) -> list[str]:
    """The report's front section: what the front is, its table, its figure, and how to ablate one point."""
    names, front = search["names"], search["front"]
    said = ", ".join(f"{d} {n}" for d, n in zip(search["directions"], names))
    confirmed = int((front["seeds"] != "0").sum()) if len(front) else 0
    seeds = ", ".join(map(str, search["confirm_seeds"]))
    lines = [f"Pareto front ({said}): {len(front)} of the {search['complete']} complete trials, those no other "
             "complete trial matches or beats on every objective (distinct points; values as the search measured "
             f"them, on its one seed). The confirm phase re-trained {confirmed} of them, spread along the front (its "
             f"two ends and evenly between, by rank), on seeds {seeds}: their test accuracy is the mean ± standard "
             "deviation over those seeds, with its 95% t-interval.", ""]
    if len(front):
        lines += [front.to_markdown(index=False, disable_numparse=True), ""]
    if search["pareto_figure"] is not None:
        lines += [f"![Pareto front]({search['pareto_figure'].name})", ""]
    study_file = search.get("study_file") or "STUDY.toml"
    lines += [f"`ablate followup {study_file} --point top1` (a point's name above, or `--point <Optuna trial>`) "
              "writes an ablation study around one confirmed point; the importances below are for "
              f"{names[0]}.", ""]
    return lines


def pareto_figure(complete: list, points: list, names: list[str], directions: list[str],
                  confirmed: dict[int, tuple[str, pd.Series]], path: Path) -> None:
    """The first objective (validation) against the second: every complete trial, the front, and each confirmed point's
    test accuracy (mean and 95% interval over the confirm seeds) at its cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 100.0 if names[0] == "val_accuracy" else 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context():
        figure, axes = plt.subplots(figsize=(8, 5.5))
        axes.scatter([t.values[1] for t in complete], [scale * t.values[0] for t in complete], s=22, color="0.65",
                     label=f"trials ({len(complete)} complete; search seed, validation)", zorder=2)
        ordered = sorted(points, key=lambda t: t.values[1])
        axes.plot([t.values[1] for t in ordered], [scale * t.values[0] for t in ordered],
                  "-" if len(names) == 2 else "", marker="o", markersize=8, color="C1", zorder=3,
                  label=f"Pareto front ({len(points)} points)")
        _confirmed_bars(axes, points, names, confirmed)
        _cost_axis(axes, names[1], [t.values[1] for t in complete])
        axes.set_xlabel(f"{AXIS_LABELS.get(names[1], names[1])} ({directions[1]})")
        axes.set_ylabel(f"{AXIS_LABELS.get(names[0], names[0])} ({directions[0]})" if names[0] != "val_accuracy" or
                        not confirmed else f"accuracy (%): search validation ({directions[0]}), confirmed test")
        rest = f"; the front is over all {len(names)} objectives" if len(names) > 2 else ""
        axes.set_title(f"Pareto front: {names[0]} against {names[1]}{rest}")
        axes.grid(True, alpha=0.3)
        handles, labels = [], []
        for ax in figure.axes:
            more = ax.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        # Below the axes, on the top ones (a twin's): it hides no point and nothing is drawn over it.
        figure.axes[-1].legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8)
        saved(figure, path, plt)


def _cost_axis(axes, name: str, costs: list[float]) -> None:
    """Counts on a log scale where they span a decade or more, written in full (25,450, not 2.5×10⁴)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if name not in ("params", "macs"):
        return
    if min(costs) > 0 and max(costs) / min(costs) >= 10:
        axes.set_xscale("log")
        axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_minor_formatter(NullFormatter())
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))


def _confirmed_bars(axes, points: list, names: list[str], confirmed: dict[int, tuple[str, pd.Series]]) -> None:
    """Each confirmed front point's test accuracy (%) as a mean with its 95% t-interval, at the point's cost: on the
    same axis as validation accuracy, else on one of its own at the right."""
    shown = [(t, confirmed[t.number]) for t in points if t.number in confirmed and len(confirmed[t.number][1])]
    if not shown:
        return
    target = axes if names[0] == "val_accuracy" else axes.twinx()
    if target is not axes:
        target.set_ylabel("confirmed test accuracy (%)")
    seeds = max(len(accuracies) for _, (_, accuracies) in shown)
    for i, (trial, (arm, accuracies)) in enumerate(shown):
        percent = 100 * accuracies
        low, high = mean_interval(percent)
        mean = percent.mean()
        error = None if math.isnan(low) else [[mean - low], [high - mean]]
        target.errorbar([trial.values[1]], [mean], yerr=error, fmt="D", color="C0", capsize=5, markersize=6,
                        zorder=4, label=(f"confirmed: test accuracy, mean and 95% CI over {seeds} seed"
                                         f"{'s' if seeds > 1 else ''}") if i == 0 else None)
        target.annotate(arm.split(" = ")[-1].split(" ")[0], (trial.values[1], mean), textcoords="offset points",
                        xytext=(6, -12), fontsize=8, color="C0")
