"""A run hands its tasks to the workers longest first (ablate.design's longest_first), each exactly once."""

from __future__ import annotations

from ablate.design import Pack
from ablate.run import Done, Finished, InlineBackend, Outcome, Started, load, prepare, run_study, task_key, task_trials
from tests._helpers import QuietReporter
from tests.conftest import DATA_DIR, TINY_STUDY


def test_run_study_hands_out_the_costliest_task_first_and_every_trial_once(write_study, store):
    handed: list = []

    def record(slot, task, emit) -> None:
        handed.append(task)
        for trial in task_trials(task):
            emit(Started(slot.index, task_key(task), trial, f"run-{trial.hash}"))
            emit(Finished(slot.index, task_key(task), trial.hash, Outcome(test_accuracy=0.9, train_seconds=1.0)))
        emit(Done(slot.index, task_key(task)))

    # linear (seeds 0, 1) first in the file; the MLP costs more per image, and its two seeds train packed
    path = write_study(TINY_STUDY.replace('[[stage]]\nname = "linear"', '[execution]\npack = 2\n\n[[stage]]\n'
                                                                           'name = "linear"'))
    prepared = prepare(load(path), tracking_uri=store, data_dir=DATA_DIR, overrides={"devices": "cpu",
                                                                                      "max_workers": 1},
                       backend=lambda slots, config: InlineBackend(slots, execute=record))
    summary = run_study(prepared, QuietReporter())
    assert [[t.stage for t in task_trials(task)] for task in handed] == [["mlp", "mlp"], ["linear", "linear"]]
    assert all(isinstance(task, Pack) for task in handed)
    assert sorted(t.hash for t, _ in summary.finished) == sorted(t.hash for t in load(path).trials)
