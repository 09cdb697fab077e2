"""Longest-first: the order tasks (single trials and packs) are handed to workers in."""

from __future__ import annotations

import heapq

from ablate.design import Pack, expand, longest_first, pack_trials, task_cost, trial_cost
from ablate.spec import parse_study
from tests.conftest import TINY_STUDY

# TINY_STUDY's linear and MLP arms, and an MLP trained four times as long, on four seeds.
STUDY = TINY_STUDY.replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3]") + """
[[stage]]
name = "long-mlp"
model = { kind = "mlp", hidden = [32] }
train = { epochs = 8 }
"""


def _trials():
    return expand(parse_study(STUDY))


def _makespan(tasks, workers: int) -> float:
    """When the last task ends, each handed in order to the first worker to come free (as the dispatcher does)."""
    free = [0.0] * workers
    for task in tasks:
        heapq.heappush(free, heapq.heappop(free) + task_cost(task))
    return max(free)


def test_the_cost_grows_with_the_model_and_the_epochs():
    by_stage = {t.stage: trial_cost(t) for t in _trials()}
    assert by_stage["linear"] < by_stage["mlp"] < by_stage["long-mlp"] == 4 * by_stage["mlp"]


def test_tasks_come_out_longest_first_and_equal_ones_keep_their_order():
    trials = _trials()
    assert [t.stage for t in trials[::4]] == ["linear", "mlp", "long-mlp"]  # the file's order: cheapest first
    ordered = longest_first(trials)
    assert [(t.stage, t.seed) for t in ordered] == [(stage, seed) for stage in ("long-mlp", "mlp", "linear")
                                                    for seed in range(4)]
    assert sorted(ordered, key=lambda t: t.hash) == sorted(trials, key=lambda t: t.hash)  # each task exactly once


def test_a_pack_counts_as_its_trials_together():
    trials = _trials()
    linear, mlp = [t for t in trials if t.stage == "linear"], [t for t in trials if t.stage == "mlp"]
    pack = Pack(tuple(linear))
    assert task_cost(pack) == sum(trial_cost(t) for t in linear)
    assert task_cost(pack) > trial_cost(mlp[0])  # four linear trials outweigh one MLP
    assert longest_first([mlp[0], pack]) == [pack, mlp[0]]


def test_longest_first_shortens_the_makespan_where_the_old_order_left_a_pack_for_last():
    """The case packing made: the long arm packed into one task, listed after the short trials. In the file's order
    two workers share the short trials, then one trains the pack alone; longest first, the pack starts at once."""
    trials = _trials()
    tasks = pack_trials(trials, lambda group: 4 if group[0].stage == "long-mlp" else 1)
    assert isinstance(tasks[-1], Pack) and len(tasks) == 9
    before, after = _makespan(tasks, 2), _makespan(longest_first(tasks), 2)
    assert after < before
    assert after == task_cost(tasks[-1])  # the pack's own length: the bound no order can beat


def test_longest_first_is_never_worse_on_equal_tasks():
    trials = [t for t in _trials() if t.stage == "mlp"]
    assert longest_first(trials) == trials
    assert _makespan(longest_first(trials), 3) == _makespan(trials, 3)
