"""What a search space holds before anything trains: its points' parameter and MAC budgets, random points drawn
from it (the plan's survey of what fits, the seeded random start), and the checks that every point resolves to
settings that train."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from ablate import datasets, models
from ablate.errors import SpecError
from ablate.spec._schema import Stage, Study
from ablate.spec._space import BUDGETS, SpaceEntry, resolve_point


def budget_use(study: Study, stage: Stage) -> dict[str, tuple[int, int]]:
    """Each budget of the search, as (what the point's network counts, the budget); ModelError when the network does
    not fit the data."""
    settings, data = study.search.settings, datasets.get(study.info.dataset)
    use = {}
    params = models.params_count(stage.model, data)  # also checks that the network fits the data
    if settings.max_params is not None:
        use["max_params"] = (params, settings.max_params)
    if settings.max_macs is not None:
        macs = models.macs(stage.model, data)
        if macs is None:
            raise SpecError(study.path, "search.max_macs", f"model kind '{stage.model.kind}' cannot count its "
                            "multiply-accumulates; use max_params, or a built-in kind")
        use["max_macs"] = (macs, settings.max_macs)
    return use


def point_problem(study: Study, stage: Stage) -> str | None:
    """Why a searched point is not trained: its network does not fit the data, or is over a budget (`max_params`,
    `max_macs`); None: it is fine."""
    try:
        use = budget_use(study, stage)
    except models.ModelError as exc:
        return f"the network does not fit the data: {exc}"
    over = [f"{count:,} {BUDGETS[key]} > {key} {budget:,}" for key, (count, budget) in use.items() if count > budget]
    return "; ".join(over) or None


def random_point(space: tuple[SpaceEntry, ...], rng: random.Random) -> tuple[tuple[str, Any], ...]:
    """A point drawn uniformly (log-uniformly on a log range), with `when` conditions honoured as in a search."""
    chosen: dict[str, Any] = {}
    for entry in space:
        if entry.applies(chosen):
            chosen[entry.path] = _draw(entry, rng)
    return tuple(chosen.items())


def _draw(entry: SpaceEntry, rng: random.Random) -> Any:
    if entry.kind == "categorical":
        return rng.choice(entry.choices)
    low, high = entry.low, entry.high
    if entry.step:
        value = low + entry.step * rng.randint(0, int((high - low) // entry.step))
    elif entry.log:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    return min(int(high), max(int(low), round(value))) if entry.kind == "int" else value


@dataclass(frozen=True)
class SpaceSurvey:
    """How much of the space trains: points drawn at random, those within every budget, and the counts seen."""

    drawn: int
    fit: int
    ranges: dict[str, tuple[int, int]]  # budget key → (smallest, largest) count among the networks that fit the data

    def seen(self) -> str:
        """'4,375 – 15,442 parameters, 402,534 – 4,025,520 MACs'."""
        seen = ", ".join(f"{low:,} – {high:,} {BUDGETS[key]}" for key, (low, high) in self.ranges.items())
        return seen or "no network drawn fits the data"

    def describe(self) -> str:
        return f"{self.fit} of {self.drawn} points drawn at random train ({self.seen()})"


SURVEY_POINTS = 400


def survey_space(study: Study, points: int = SURVEY_POINTS) -> SpaceSurvey:
    """Draw points at random (seeded by the search's seed) and count those `point_problem` lets through."""
    rng = random.Random(study.search.settings.seed)
    fit, seen = 0, {}
    for _ in range(points):
        try:
            stage = resolve_point(study, random_point(study.search.space, rng))
            use = budget_use(study, stage)
        except (SpecError, models.ModelError):
            continue
        for key, (count, _) in use.items():
            seen.setdefault(key, []).append(count)
        fit += all(count <= budget for count, budget in use.values())
    return SpaceSurvey(points, fit, {key: (min(counts), max(counts)) for key, counts in seen.items()})


def check_space_trains(study: Study) -> SpaceSurvey | None:
    """With a budget, some points of the space must fit it: refused at plan time, not after a search of rejections.
    None when the search has no budget."""
    settings = study.search.settings
    budgets = [key for key in BUDGETS if getattr(settings, key) is not None]
    if not budgets:
        return None
    budget_use(study, resolve_point(study, ()))  # a budget the model kind cannot count is refused here
    survey = survey_space(study)
    if survey.fit == 0:
        raise SpecError(study.path, f"search.{budgets[0]}",
                        f"none of {survey.drawn} points drawn at random from search.space fits "
                        f"{' and '.join(budgets)}: {survey.seen()} seen; "
                        f"raise the budget or search smaller networks")
    return survey


def check_space_resolves(study: Study) -> None:
    """Every choice and both ends of every range must make valid settings (with their conditions met)."""
    for entry in study.search.space:
        values = entry.choices if entry.kind == "categorical" else (entry.low, entry.high)
        for value in values:
            point = tuple((p, vals[0]) for p, vals in entry.when) + ((entry.path, value),)
            why: list[str] = []
            try:
                stage = resolve_point(study, point, why=why)
            except SpecError as exc:
                raise SpecError(study.path, f'search.space."{entry.path}"', f"{value!r}: {exc.message}") from None
            if entry.path != "stage" and entry.path not in dict(stage.point):
                if why and "[" in entry.path:  # a block the network does not have: the reason is the message
                    raise SpecError(study.path, f'search.space."{entry.path}"', why[0])
                reason = f" ({why[0]})" if why else ""
                raise SpecError(study.path, f'search.space."{entry.path}"',
                                f"{value!r} has no effect on the settings{reason}; add a `when` condition or check "
                                "the path")

