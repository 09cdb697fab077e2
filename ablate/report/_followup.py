"""`ablate followup`: a finished search's confirmed winner, written out as an ablation study (spec.ablation_text).

The winner is chosen on validation, never on test: of the confirmed configurations (not the base settings), the one
with the best mean of the search's objective over the confirm seeds, every seed finished.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from ablate._shell import command
from ablate.errors import AblateError
from ablate.spec import Change, Stage, Study, ablation_text, winner_changes
from ablate.tracking import Tracker


@dataclass(frozen=True)
class FollowUp:
    text: str  # the TOML of the ablation study
    winner: Stage
    objective: float  # its mean objective over the confirm seeds
    test_accuracy: float  # its mean test accuracy there (for the header; not what chose it)
    changes: list[Change]
    base_better: bool = False  # the base settings scored better on validation than the winner


def _winner(study: Study, tracker: Tracker, storage: str) -> tuple[tuple[Stage, float, float], tuple | None]:
    """The best confirmed configuration (arm, mean objective, mean test accuracy), and the base settings' scores
    where they did better on validation than it (None otherwise)."""
    import optuna

    from ablate.report._load import load_study
    from ablate.search import confirm_trials, open_storage, optuna_name

    name = optuna_name(study)
    try:
        optuna_study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise AblateError(f"{storage} holds no Optuna study {name} (the search of {study.path} as it is now); run "
                          f"`{command('ablate')} run {study.path}` first, or pass --storage") from None
    arms, _ = confirm_trials(study, optuna_study)
    objective = study.search.settings.objective
    runs = load_study(tracker, study.name, None, None, "test_accuracy").runs
    seeds = len(study.search.confirm_seeds)
    scores, base = {}, None
    for arm in arms:
        mine = runs[runs["stage"] == arm.name] if len(runs) else runs
        if len(mine) < seeds:
            continue  # not confirmed on every seed
        # The validation score of the weights that were tested (the best epoch's, with early stopping restored), as
        # the report's table shows it.
        tested = f"tested_{objective}" if f"tested_{objective}" in mine else objective
        score = (arm, float(mine[tested].fillna(mine[objective]).mean()), float(mine["test_accuracy"].mean()))
        if arm.index == 0 and study.search.settings.confirm_base:
            base = score  # the base settings: no change to ablate
        else:
            scores[arm.name] = score
    if not scores:
        raise AblateError(f"no configuration of {study.path} is confirmed on all {seeds} confirm seeds yet; run "
                          f"`{command('ablate')} run {study.path}` to finish its confirm phase")
    pick = max if study.search.settings.maximize else min
    best = pick(scores.values(), key=lambda item: item[1])
    return best, base if base is not None and pick(base, best, key=lambda item: item[1]) is base else None


def followup(uri: str, study: Study, storage: str, name: str | None, seeds: tuple[int, ...] | None,
             command: str) -> FollowUp:
    if study.search is None:
        raise AblateError(f"{study.path}: `ablate followup` reads a search study (design = \"search\"), not a "
                          f"{study.info.design}")
    (winner, score, test), better_base = _winner(study, Tracker(uri), storage)
    objective = study.search.settings.objective
    today = datetime.date.today().isoformat()
    caveat = [f"# Note: the base settings did better on validation ({objective} {better_base[1]:.4f}): this ablates "
              "a configuration the search did not improve on."] if better_base else []
    header = "\n".join(caveat + [
        f"# Written by `{command}` on {today}.",
        f"# The winner of search '{study.name}' ({study.path}): {winner.name}, chosen on validation ({objective} "
        f"{score:.4f}, mean of confirm seeds {', '.join(map(str, study.search.confirm_seeds))}; test accuracy there "
        f"{100 * test:.2f}%).",
        "# The baseline ('winner') is its settings; each [[arm]] undoes one change it made to the search's base",
        "# settings (leave one out); 'base' undoes them all. Edit freely: it is an ordinary ablation study.",
    ])
    changes = winner_changes(study, winner.point)
    text = ablation_text(study, winner.point, changes, name or f"{study.name}-winner",
                         seeds or study.search.confirm_seeds, header)
    return FollowUp(text, winner, score, test, changes, better_base is not None)
