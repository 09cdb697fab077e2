"""A search's objectives: one validation metric (`objective`), or several (`objectives`: that metric first, then
costs), checked together with the settings that depend on how many there are."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ablate.errors import SpecError

VALIDATION = ("val_accuracy", "val_loss")  # what a search trial measures on validation (never test)
COSTS = ("params", "macs", "train_seconds")  # what else a Pareto search may trade the validation metric against


def check_objectives(settings: Any, table: dict, file: str) -> Any:
    """The [search] settings (a SearchSettings) with `objectives` checked, and normalised: one objective is
    `objective` (the same search, and the same Optuna study, as written that way); with several, `objective` is the
    validation one and the pruner 'none' (unless written otherwise, which is refused)."""
    if "directions" in table and "objectives" not in table:
        raise SpecError(file, "search.directions", "goes with search.objectives (one direction per objective); for "
                                                   "one objective, use search.direction")
    if "objectives" not in table:
        return settings
    if "objective" in table:
        raise SpecError(file, "search.objectives", "give search.objective (one) or search.objectives (several), "
                                                   "not both")
    names, directions = settings.objectives, settings.directions
    _check_names(names, file)
    if directions and len(directions) != len(names):
        raise SpecError(file, "search.directions", f"must give one direction per objective: {len(names)} "
                                                   f"({', '.join(names)}), not {len(directions)}")
    if len(names) == 1:
        direction = directions[0] if directions else settings.direction
        return replace(settings, objective=names[0], direction=direction, objectives=(), directions=())
    if "direction" in table:
        raise SpecError(file, "search.direction", "with several objectives, give search.directions (one per "
                                                  f"objective: {', '.join(names)}), or leave it out")
    if settings.sampler == "cmaes":
        raise SpecError(file, "search.sampler", "'cmaes' optimises one objective (Optuna's CmaEsSampler refuses a "
                                                "multi-objective study); use 'tpe', 'nsgaii', 'random', 'qmc' or 'gp'")
    if "pruner" in table and settings.pruner != "none":
        raise SpecError(file, "search.pruner", f"'{settings.pruner}' cannot prune a search of several objectives: "
                        "Optuna's pruners compare one intermediate value per epoch, and Optuna refuses to report one "
                        "for a multi-objective study; set pruner = \"none\" or leave it out (the default then)")
    return replace(settings, objective=names[0], pruner="none")


def _check_names(names: tuple[str, ...], file: str) -> None:
    if not names:
        raise SpecError(file, "search.objectives", f"must list the validation metric ({' or '.join(VALIDATION)}), "
                                                   f"then any of {', '.join(COSTS)}")
    if names[0] not in VALIDATION:
        raise SpecError(file, "search.objectives[1]", f"must be the validation metric ({' or '.join(VALIDATION)}), "
                        f"not '{names[0]}': the search ranks what trains well first, then what it costs")
    for i, name in enumerate(names[1:], 2):
        if name in VALIDATION:
            raise SpecError(file, f"search.objectives[{i}]", f"'{name}': one validation metric only (the first); "
                                                              f"the others are costs: {', '.join(COSTS)}")
        if name in names[:i - 1]:
            raise SpecError(file, f"search.objectives[{i}]", f"lists '{name}' twice")
