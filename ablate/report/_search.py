"""The Optuna side of a search study's report: trial counts, the best trials, importances, the history figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ablate.report._draw import FigureFiles
from ablate.report._pareto import pareto_summary


def search_summary(info: dict, figures: FigureFiles | None, runs: pd.DataFrame | None = None) -> dict:
    """The Optuna side of a search study: trial counts, the best trials, importances, the history figure (drawn
    where `figures` says); with several objectives, the Pareto front instead of the best trials and the history, its
    points' confirmed test accuracy read from `runs` (the confirm runs)."""
    import warnings

    import optuna

    from ablate.search import INTERRUPTED_ATTR, REJECTED_ATTR, open_storage

    study = optuna.load_study(study_name=info["study"], storage=open_storage(info["storage"]))
    trials = study.get_trials(deepcopy=False)
    # A point rejected before training (over a budget) is PRUNED to Optuna, but was never trained; a trial cut off by
    # Ctrl-C or a lost worker is a FAIL to Optuna, but did not fail (its point was tried again).
    states = ["REJECTED" if t.user_attrs.get(REJECTED_ATTR) else "INTERRUPTED" if t.user_attrs.get(INTERRUPTED_ATTR)
              else t.state.name for t in trials]
    counts = pd.Series(states, dtype=object).value_counts().to_dict()
    if len(study.directions) > 1:
        return pareto_summary(study, info, counts, figures, runs)
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
        figure = figures.path("history")
        _history_figure(study, figure)
    return {"counts": counts, "best": pd.DataFrame(rows).fillna("—"), "importances": importances, "figure": figure,
            "objective": info["objective"], "storage": info["storage"], "base": bool(info.get("confirm_base"))}


def _history_figure(study, path: Path) -> None:
    import warnings

    import matplotlib
    import optuna

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history

    path.parent.mkdir(parents=True, exist_ok=True)
    # Optuna's plotting calls plt.style.use("ggplot"), which changes every later figure of the process (the report's
    # other figures came out grey-backed): its style is confined to this figure.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot_optimization_history(study)
        axes.figure.set_size_inches(8, 4.5)
        axes.figure.tight_layout()
        axes.figure.savefig(path, dpi=120)
        plt.close(axes.figure)
