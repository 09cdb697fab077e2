"""The verdict columns of a report's table (_judge), fed synthetic runs: what each arm is called, with fixed and with
adaptive seeds, and how the table shows it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablate.report._judge import Judging, verdict_cells
from ablate.report._table import summarise

STAGES = [{"name": name, "index": i} for i, name in enumerate(("base", "big", "same", "noisy"))]


def _runs(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for stage, values in scores.items():
        for seed, value in enumerate(values):
            rows.append({"stage": stage, "seed": seed, "test_accuracy": value, "val_accuracy": value,
                         "tested_val_accuracy": value, "epochs_run": 1, "tested_epoch": 1, "train_size": 100,
                         "train_seconds": 1.0, "params_count": 10, "test_loss": 0.1, "peak_memory_mb": 1.0})
    return pd.DataFrame(rows)


def _scores(n: int, seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    base = 0.90 + 0.002 * rng.standard_normal(n)  # seed effects shared by every arm: what pairing removes
    return {"base": list(base),
            "big": list(base + 0.03 + 0.0003 * rng.standard_normal(n)),  # +3 points
            "same": list(base + 0.00001 * rng.standard_normal(n)),  # within ±0.1 points, tightly
            "noisy": list(base + 0.0005 + 0.004 * rng.standard_normal(n))}  # +0.05 points, spread 0.4


def test_fixed_seeds_give_better_equivalent_and_undecided():
    table = summarise(_runs(_scores(5)), STAGES, 0, "test_accuracy", Judging(margin=0.1))
    verdicts = dict(zip(table["stage"], table["verdict"]))
    assert verdicts == {"base": None, "big": "better", "same": "equivalent", "noisy": "undecided"}
    noisy = table.set_index("stage").loc["noisy"]
    assert noisy["seeds_needed"] > 5  # a decision needs more seeds than it had
    assert noisy["diff_low"] < 0 < noisy["diff_high"]
    big = table.set_index("stage").loc["big"]
    assert big["effect_dz"] > 5 and big["effect_low"] > 0
    assert math.isnan(big["seeds_needed"])  # decided: nothing to ask for
    assert not math.isnan(big["p_improvement"]) and big["p_improvement"] > 0.9  # n ≥ 5: rliable's P(X > Y)
    cells = verdict_cells(table)
    assert cells[0] == "—" and cells[1] == "better" and cells[3].startswith("undecided (~")


def test_a_margin_wider_than_the_difference_makes_it_equivalent():
    table = summarise(_runs(_scores(5)), STAGES, 0, "test_accuracy", Judging(margin=5.0))
    assert dict(zip(table["stage"], table["verdict"]))["big"] == "equivalent"  # +3 points within ±5


def test_below_five_seeds_no_bootstrap_and_below_two_no_verdict():
    table = summarise(_runs(_scores(3)), STAGES, 0, "test_accuracy", Judging())
    assert table["p_improvement"].isna().all() and table["boot_low"].isna().all()
    one = summarise(_runs(_scores(1)), STAGES, 0, "test_accuracy", Judging())
    assert set(one["verdict"].dropna()) == {"undecided"}


def test_adaptive_seeds_are_judged_by_repeated_intervals_on_the_leading_seeds():
    scores = _scores(10)
    fixed = summarise(_runs(scores), STAGES, 0, "test_accuracy", Judging(margin=0.1))
    adaptive = summarise(_runs(scores), STAGES, 0, "test_accuracy", Judging(margin=0.1, adaptive=(3, 10)))
    # The repeated interval is wider than the fixed-n one: it holds at every look at once.
    for stage in ("big", "noisy"):
        f, a = fixed.set_index("stage").loc[stage], adaptive.set_index("stage").loc[stage]
        assert a["diff_high"] - a["diff_low"] > f["diff_high"] - f["diff_low"]
    assert dict(zip(adaptive["stage"], adaptive["verdict"]))["big"] == "better"


def test_an_adaptive_verdict_is_read_where_the_rounds_stopped_the_arm_not_at_extra_seeds():
    """Seeds past the look that decided an arm (trained by another study of the same trials) do not move its
    verdict: 'big' is decided at its first look, 3 seeds, as the run decided it, whatever seeds 4–10 say."""
    scores = _scores(10)
    scores["big"] = scores["big"][:3] + [b - 0.05 for b in scores["base"][3:]]  # later seeds 5 points worse
    judging = Judging(margin=0.1, adaptive=(3, 10))
    table = summarise(_runs(scores), STAGES, 0, "test_accuracy", judging).set_index("stage")
    assert table.loc["big", "verdict"] == "better" and table.loc["big", "verdict_pairs"] == 3
    assert table.loc["noisy", "verdict_pairs"] == 10  # undecided to the end: read at its last seed


def test_a_loss_is_better_when_lower():
    scores = _scores(5)
    runs = _runs(scores)
    runs["test_loss"] = 1 - runs["test_accuracy"]  # lower loss where accuracy is higher
    table = summarise(runs, STAGES, 0, "test_loss", Judging(margin=0.001))
    assert dict(zip(table["stage"], table["verdict"]))["big"] == "better"


def test_judging_is_read_from_the_plan():
    plan = {"stats": {"margin": 0.05, "alpha": 0.01, "metric": "test_accuracy"}, "adaptive": {"min": 3, "max": 8,
                                                                                          "first": 0}}
    assert Judging.of_plan(plan, "test_accuracy") == Judging(0.05, 0.01, (3, 8))
    assert Judging.of_plan(plan, "val_accuracy").margin == 0.05  # points either way
    assert Judging.of_plan(plan, "test_loss").margin == 0.01  # another kind of metric: its default
    assert Judging.of_plan(None, "test_accuracy") == Judging()  # a study run before [stats] existed


def test_two_seeds_of_a_huge_difference_still_get_a_verdict():
    """Two seeds, an arm 12 points below with little spread: the noncentral t of its effect-size interval is NaN in
    scipy (1 degree of freedom, t in the tens); the table must still be built, the interval left out."""
    runs = _runs({"base": [0.718, 0.726], "big": [0.586, 0.614], "same": [0.718, 0.727], "noisy": [0.70, 0.74]})
    table = summarise(runs, STAGES, 0, "test_accuracy", Judging())
    assert list(table["verdict"])[0] is None and len(table) == 4
