"""Adaptive seeds in `ablate run` and `ablate plan`: the decisions (ablate.run's adaptive) on synthetic results —
who gets another seed, who stops, who waits — the rounds' loop stopping when the run is, and one tiny MNIST study run
for real, whose trained trials must be exactly the ones its own results call for."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from ablate.design import expand
from ablate.run._adaptive import FAILED_HERE, RUNNING_ELSEWHERE, final_note, next_round, round_note
from ablate.spec import parse_study

STUDY = """
[study]
name = "adaptive"
seeds = {{ min = 3, max = 5 }}
{extra}

[data]
train_limit = 1000

[[stage]]
name = "linear"
model = {{ kind = "linear" }}

[[stage]]
name = "mlp"
model = {{ kind = "mlp", hidden = [32] }}

[[stage]]
name = "wide"
model = {{ kind = "mlp", hidden = [64] }}
"""

BASE = [90.0, 91.0, 90.5, 90.2, 90.8]  # the baseline's test accuracy (%) by seed
# mlp: 5 points better, seed after seed; wide: one point either side of the baseline — undecided for good
SHIFTS = {"linear": [0.0] * 5, "mlp": [5.0, 5.1, 5.2, 5.1, 5.0], "wide": [-1.0, 1.0, -1.0, 1.0, -1.0]}


def _study(extra: str = ""):
    study = parse_study(STUDY.format(extra=extra))
    return study, expand(study)


def _value(trial) -> float:
    return BASE[trial.seed] + SHIFTS[trial.stage][trial.seed]


def _finished(trials, seeds: dict[str, int]) -> dict[str, float]:
    """The results when each arm has finished its first seeds[arm] seeds."""
    return {t.hash: _value(t) for t in trials if t.seed < seeds[t.stage]}


def _pairs(trials) -> list[tuple[str, int]]:
    return [(t.stage, t.seed) for t in trials]


def test_the_first_round_trains_each_arms_first_min_seeds_not_all_max():
    study, trials = _study()
    first = next_round(study, trials, {})
    assert len(trials) == 15
    assert _pairs(first.todo) == [(arm, s) for arm in ("linear", "mlp", "wide") for s in range(3)]
    assert first.settled == [] and round_note(None, first) is None


def test_a_clearly_better_arm_stops_at_min_and_an_undecided_one_gets_seeds_up_to_max():
    study, trials = _study()
    results, trained, current, rounds = {}, [], next_round(study, trials, {}), 0
    while current.todo:  # the run's loop, with results made up instead of trained
        trained += current.todo
        results.update({t.hash: _value(t) for t in current.todo})
        current, rounds = next_round(study, trials, results), rounds + 1
    used = {arm: sorted(t.seed for t in trained if t.stage == arm) for arm in ("linear", "mlp", "wide")}
    assert used == {"linear": [0, 1, 2, 3, 4], "mlp": [0, 1, 2], "wide": [0, 1, 2, 3, 4]}
    assert rounds == 3  # min, then one seed per round up to max
    assert current.arms["mlp"].comparison.verdict == "better" and current.arms["mlp"].comparison.n == 3
    assert current.arms["wide"].comparison.verdict == "undecided" and current.arms["wide"].comparison.n == 5
    assert {t.hash for t in current.settled} == {t.hash for t in trained}  # every arm done: every model settles
    note = final_note(current)
    assert note.startswith("adaptive seeds used: linear (baseline) 5 seeds; mlp better after 3 seeds (Δ +5.10 pts")
    assert "wide undecided at the maximum, 5 seeds" in note


def test_after_a_round_the_undecided_arm_and_the_baseline_get_the_next_seed_and_the_note_says_why():
    study, trials = _study()
    after_first = next_round(study, trials, _finished(trials, {"linear": 3, "mlp": 3, "wide": 3}))
    assert _pairs(after_first.todo) == [("linear", 3), ("wide", 3)]  # not mlp: decided
    note = round_note(next_round(study, trials, {}), after_first)
    assert note.startswith("adaptive seeds: mlp vs linear better after 3 seeds (Δ +5.10 pts, difference interval ")
    assert "; wide vs linear undecided after 3 seeds (Δ -0.33 pts" in note and note.endswith("→ gets seed 3")
    # mlp is done, so its models settle; wide and the baseline are not
    assert {(t.stage, t.seed) for t in after_first.settled} == {("mlp", 0), ("mlp", 1), ("mlp", 2)}


def test_the_differences_pair_only_the_leading_seeds_both_have_finished():
    """The baseline's seed 3 missing: wide's own seed 3 does not count, and the pair is completed, not skipped."""
    study, trials = _study()
    results = _finished(trials, {"linear": 3, "mlp": 3, "wide": 4})
    current = next_round(study, trials, results)
    assert current.arms["wide"].paired == 3 and current.arms["wide"].comparison.n == 3
    assert _pairs(current.todo) == [("linear", 3)]


def test_a_trial_running_elsewhere_is_waited_for_not_trained_and_a_failed_one_not_retried():
    study, trials = _study()
    results = _finished(trials, {"linear": 3, "mlp": 3, "wide": 3})
    base_3 = next(t for t in trials if (t.stage, t.seed) == ("linear", 3))
    current = next_round(study, trials, results, {base_3.hash: RUNNING_ELSEWHERE})
    assert _pairs(current.todo) == [("wide", 3)]
    assert current.arms["wide"].waits == (f"linear seed 3 ({RUNNING_ELSEWHERE})",)
    assert "wide vs linear waits for linear seed 3 (running in another invocation)" in round_note(None, current)
    assert "wide 3 seeds so far, undecided, waiting for linear seed 3" in final_note(current)
    failed = next_round(study, trials, results, {base_3.hash: FAILED_HERE})
    assert _pairs(failed.todo) == [("wide", 3)] and failed.arms["wide"].waits == (f"linear seed 3 ({FAILED_HERE})",)
    # once it finished there, the decisions go on as if it had been trained here
    results[base_3.hash] = _value(base_3)
    assert _pairs(next_round(study, trials, results, {base_3.hash: RUNNING_ELSEWHERE}).todo) == [("wide", 3)]


def test_a_result_without_the_metric_is_left_out_of_the_differences():
    """A diverged run (nan) counts as no difference; the arm goes on to its next seed."""
    study, trials = _study()
    results = _finished(trials, {"linear": 3, "mlp": 3, "wide": 3})
    mlp_1 = next(t for t in trials if (t.stage, t.seed) == ("mlp", 1))
    results[mlp_1.hash] = math.nan
    current = next_round(study, trials, results)
    assert current.arms["mlp"].comparison.n == 2 and current.arms["mlp"].paired == 3
    assert ("mlp", 3) in _pairs(current.todo)


def test_the_baseline_is_the_one_the_study_names_and_losses_are_lower_is_better():
    study, trials = _study('baseline = "mlp"\n[stats]\nmetric = "test_loss"\nmargin = 0.01')
    results = {t.hash: 1.0 - _value(t) / 100 for t in trials if t.seed < 3}  # a loss: lower is better
    current = next_round(study, trials, results)
    assert current.baseline == "mlp" and current.arms["mlp"].comparison is None
    assert current.arms["linear"].comparison.verdict == "worse"  # a higher loss than mlp's
    assert current.arms["linear"].comparison.mean == pytest.approx(0.051)  # raw loss units, not ×100
    assert _pairs(current.todo) == [("mlp", 3), ("wide", 3)]


def test_a_fixed_seeds_plan_is_unchanged_and_an_adaptive_one_states_its_budget(capsys, tmp_path):
    from ablate.cli import main
    from tests.conftest import TINY_STUDY

    fixed = tmp_path / "fixed.toml"
    fixed.write_text(TINY_STUDY)
    assert main(["plan", str(fixed)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "4 trials: 2 stages × 2 seeds (seeds 0, 1)" in out and "(adaptive:" not in out and "more trial" not in out
    adaptive = tmp_path / "adaptive.toml"
    adaptive.write_text(STUDY.format(extra=""))
    assert main(["plan", str(adaptive)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert ("9–15 trials: 3 stages × 3–5 seeds (adaptive: min 3, max 5, seeds 0–4; arms still undecided after a "
            "round get one more seed, the baseline with them)") in out
    assert "+ up to 6 more trial(s) (seeds 3, 4) for arms still undecided after a round" in out
    assert main(["plan", str(adaptive), "--format", "json"]) == 0
    import json

    document = json.loads(capsys.readouterr().out)
    assert document["adaptive"] == {"min": 3, "max": 5, "first": 0, "first_round_trials": 9, "worst_case_trials": 15}


@dataclass
class _Summary:
    experiment_id: str = "1"
    interrupted: bool = False
    store_error: str | None = None
    failed: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    slots: list = field(default_factory=list)


class _InterruptedDispatcher:
    """Ctrl-C during the first round."""

    def __init__(self):
        self.summary, self.reporter, self.rounds = _Summary(), None, 0

    def run(self, tasks):
        self.rounds += 1
        self.summary.interrupted = True


def test_an_interrupted_run_starts_no_new_round():
    from types import SimpleNamespace

    from ablate.run._rounds import _train_rounds

    study, trials = _study()
    prepared = SimpleNamespace(study=study, trials=trials, tracker=None)  # never read: no round after the first
    dispatcher = _InterruptedDispatcher()
    first = next_round(study, trials, {})
    assert _train_rounds(dispatcher, prepared, first, {}, 1) is first
    assert dispatcher.rounds == 1


TINY_ADAPTIVE = """
[study]
name = "tiny-adaptive"
seeds = { min = 2, max = 4 }

[data]
val_size = 500
train_limit = 1000
test_limit = 500

[train]
epochs = 1
batch_size = 128

[tracking]
models = "none"

[stats]
margin = 0.5

[[stage]]
name = "linear"
model = { kind = "linear" }

[[stage]]
name = "mlp"
model = { kind = "mlp", hidden = [32] }
"""


@pytest.mark.slow
def test_a_tiny_adaptive_study_trains_what_its_own_results_call_for_and_a_rerun_trains_nothing(
        write_study, store, capsys):
    from ablate.cli import main
    from ablate.run import InlineBackend, load, prepare, run_study
    from ablate.run._rounds import finished_results
    from ablate.tracking import Tracker
    from tests._helpers import QuietReporter
    from tests.conftest import DATA_DIR

    path = write_study(TINY_ADAPTIVE)

    def run():
        prepared = prepare(load(path), tracking_uri=store, data_dir=DATA_DIR, overrides={"devices": "cpu"},
                           backend=InlineBackend)
        return prepared, run_study(prepared, QuietReporter())

    prepared, summary = run()
    study, trials = prepared.study, prepared.trials
    tracker = Tracker(store)
    results = finished_results(tracker, summary.experiment_id, "test_accuracy")
    # the decisions replayed on the results the run recorded: the trials they call for, round after round
    called, current = set(), next_round(study, trials, {})
    while current.todo:
        called |= {t.hash for t in current.todo}
        current = next_round(study, trials, {h: results[h] for h in called})
    trained = {trial.hash for trial, _ in summary.finished}
    assert trained == called == set(results) and not summary.failed
    assert 4 <= len(trained) <= 8 and summary.total == len(trained)
    assert summary.notes[-1] == final_note(current)
    assert all(note.startswith("adaptive seeds") for note in summary.notes)
    _, again = run()
    assert again.finished == [] and again.skipped == again.total == len(trained)
    assert again.notes == [final_note(current)]
    # the design edited after the run: the next run says so before it re-reads the rounds
    from ablate.run._rounds import design_change

    assert design_change(tracker, summary.experiment_id, study) is None
    edited = load(write_study(TINY_ADAPTIVE.replace("max = 4", "max = 6").replace("margin = 0.5", "margin = 0.4"),
                                "edited.toml"))
    warning = design_change(tracker, summary.experiment_id, edited.study)
    assert warning is not None and "adaptive.max 4 → 6" in warning and "stats.margin 0.5 → 0.4" in warning
    assert main(["plan", str(path), "--tracking-uri", store]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "4–8 trials: 2 stages × 2–4 seeds (adaptive: min 2, max 4" in out
    assert f"{len(trained)} done" in out
