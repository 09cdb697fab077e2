"""`ablate followup`: a finished search's confirmed winner, written out as an ablation study (spec.ablation_text).

The winner is chosen on validation, never on test: of the confirmed configurations (not the base settings), the one
with the best mean of the search's objective over the confirm seeds, every seed finished. `--point` chooses another
confirmed configuration instead (`topN`, as the confirm arms are named, or an Optuna trial number); a search of several
objectives has no one winner, so there it is required: the error lists the confirmed points of its Pareto front.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from ablate._shell import command
from ablate.errors import AblateError
from ablate.spec import Change, Stage, Study, ablation_text, winner_changes
from ablate.tracking import Tracker

Score = tuple[Stage, float, float]  # a confirmed arm, its mean objective and its mean test accuracy (confirm seeds)


@dataclass(frozen=True)
class FollowUp:
    text: str  # the TOML of the ablation study
    winner: Stage
    objective: float  # its mean objective over the confirm seeds
    test_accuracy: float  # its mean test accuracy there (for the header; not what chose it)
    changes: list[Change]
    base_better: bool = False  # the base settings scored better on validation than the winner


def _confirmed(study: Study, tracker: Tracker, storage: str) -> tuple[dict[str, Score], Score | None, dict]:
    """The confirmed configurations (arm name → score), the base settings' score (None without confirm_base, or not
    confirmed on every seed), and the Optuna trials by number."""
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
    return scores, base, {t.number: t for t in optuna_study.get_trials(deepcopy=False)}


def _trial_number(arm_name: str) -> int | None:
    found = re.search(r"\(trial (\d+)\)$", arm_name)
    return int(found[1]) if found else None


def _listing(study: Study, scores: dict[str, Score], trials: dict) -> str:
    """Each confirmed point: its name, its objectives in the search, its confirmed test accuracy."""
    from ablate.search import scores_text

    lines = []
    for name, (_, _, test) in scores.items():
        number = _trial_number(name)
        searched = scores_text(study.search.settings, trials[number].values) if number in trials else "?"
        lines.append(f"  {name}: {searched} in the search; test accuracy {100 * test:.2f}% on the confirm seeds")
    return "\n".join(lines)


def _pick(study: Study, scores: dict[str, Score], point: str | None, trials: dict) -> Score:
    """The configuration to ablate: --point's, else the best on validation (a single objective only)."""
    settings = study.search.settings
    if point is None and settings.several:
        raise AblateError(f"{study.path}: a search of several objectives ({', '.join(settings.objective_names)}) has "
                          "no one winner; choose the confirmed point of its Pareto front to ablate with --point:\n"
                          f"{_listing(study, scores, trials)}\ne.g. `{command('ablate')} followup {study.path} "
                          f"--point {next(iter(scores)).split(' ')[0]}` (or --point <Optuna trial>)")
    if point is None:
        pick = max if settings.maximize else min
        return pick(scores.values(), key=lambda item: item[1])
    wanted = point.strip().lower().removeprefix("trial").strip()
    for name, score in scores.items():
        if (wanted.isdigit() and _trial_number(name) == int(wanted)) or name.split(" ")[0] == wanted:
            return score
    raise AblateError(f"--point {point}: no configuration of {study.path} so named is confirmed on every confirm seed "
                      "(name one as topN, or by its Optuna trial number); confirmed:\n"
                      f"{_listing(study, scores, trials)}")


def followup(uri: str, study: Study, storage: str, name: str | None, seeds: tuple[int, ...] | None,
             command: str, point: str | None = None) -> FollowUp:
    if study.search is None:
        raise AblateError(f"{study.path}: `ablate followup` reads a search study (design = \"search\"), not a "
                          f"{study.info.design}")
    scores, base, trials = _confirmed(study, Tracker(uri), storage)
    winner, score, test = chosen = _pick(study, scores, point, trials)
    pick = max if study.search.settings.maximize else min
    better_base = base if base is not None and pick(base, chosen, key=lambda item: item[1]) is base else None
    objective = study.search.settings.objective
    today = datetime.date.today().isoformat()
    what = "The winner" if point is None else f"The configuration {winner.name}"
    caveat = [f"# Note: the base settings did better on validation ({objective} {better_base[1]:.4f}): this ablates "
              "a configuration the search did not improve on."] if better_base else []
    chosen = (f"# The winner of search '{study.name}' ({study.path}): {winner.name}, chosen on validation" if point
              is None else f"# {what} of search '{study.name}' ({study.path}), chosen with --point {point}"
              f"{_searched(study, winner, trials)}; on validation")
    header = "\n".join(caveat + [
        f"# Written by `{command}` on {today}.",
        f"{chosen} ({objective} {score:.4f}, mean of confirm seeds {', '.join(map(str, study.search.confirm_seeds))}; "
        f"test accuracy there {100 * test:.2f}%).",
        "# The baseline ('winner') is its settings; each [[arm]] undoes one change it made to the search's base",
        "# settings (leave one out); 'base' undoes them all. Edit freely: it is an ordinary ablation study.",
    ])
    changes = winner_changes(study, winner.point)
    number = _trial_number(winner.name)
    default_name = f"{study.name}-winner" if point is None else f"{study.name}-trial{number}"
    text = ablation_text(study, winner.point, changes, name or default_name, seeds or study.search.confirm_seeds,
                         header, what)
    return FollowUp(text, winner, score, test, changes, better_base is not None)


def _searched(study: Study, winner: Stage, trials: dict) -> str:
    """', a point of the Pareto front (in the search: val_accuracy 0.9712, params 25,450)' for several objectives."""
    from ablate.search import scores_text

    number = _trial_number(winner.name)
    if not study.search.settings.several or number not in trials:
        return ""
    return f", a point of the Pareto front (in the search: {scores_text(study.search.settings, trials[number].values)})"
