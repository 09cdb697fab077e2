"""What the terminal shows: `ablate plan`'s table at any width, warnings, and the run display's ETA."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
from rich.console import Console
from rich.text import Text

from ablate import console as ablate_console
from ablate import models
from ablate.design import expand_design, flatten, format_value, varying_settings
from ablate.spec import load_study, parse_study
from tests._helpers import SEARCH_STUDY
from tests.conftest import REPO

STUDIES = sorted(p for p in (REPO / "studies").glob("*.toml") if load_study(p).search is None)
WIDTHS = (80, 100, 120, 200)


def _plan_text(monkeypatch, path, width: int, statuses=None) -> str:
    recorded = Console(width=width, record=True, highlight=False, file=io.StringIO())
    study = load_study(path)
    ablate_console.print_plan(study, expand_design(study), statuses, "sqlite:///x.db", recorded)
    return recorded.export_text()


def _cell_words(study) -> set[str]:
    """Every word of every value the plan must show: settings that differ, names, architectures, sizes."""
    design = expand_design(study)
    keys = varying_settings(design.trials)
    structural = any(k.startswith(models.TABLE_SETTINGS) for k in keys)  # shown as the architecture instead
    keys = [k for k in keys if not k.startswith(models.TABLE_SETTINGS)]
    words = set()
    for t in design.trials:
        flat = flatten(t.settings.to_dict())
        values = [format_value(flat[k]) for k in keys if k in flat] + [t.stage, f"{t.params_count:,}"]
        values += [t.architecture] if structural else []
        words.update(w for v in values for w in v.split())
    return words


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_plan_fits_the_width_and_cuts_no_value(monkeypatch, path, width):
    text = _plan_text(monkeypatch, path, width)
    lines = text.splitlines()
    assert max(Text(line).cell_len for line in lines) <= width
    assert "…" not in text
    words = set(text.split())
    missing = {w for w in _cell_words(load_study(path)) if w not in words and w not in text}
    assert not missing, f"values cut at {width} columns: {sorted(missing)[:5]}"
    study = load_study(path)
    first = study.info.seeds[: study.adaptive.min] if study.adaptive else study.info.seeds  # adaptive: round 1 listed
    for trial in expand_design(study).trials:
        if trial.seed in first:
            assert trial.hash[:8] in words  # never cut further than its fixed 8 characters


def test_plan_hash_is_a_fixed_8_characters(monkeypatch):
    text = _plan_text(monkeypatch, REPO / "studies" / "linearity.toml", 200)
    trial = expand_design(load_study(REPO / "studies" / "linearity.toml")).trials[0]
    assert trial.hash[:8] in text and trial.hash not in text


def test_plan_falls_back_to_one_block_per_trial_when_no_table_fits(monkeypatch):
    text = _plan_text(monkeypatch, REPO / "studies" / "ablations.toml", 80, statuses={})
    heads = [line for line in text.splitlines() if line.startswith("#")]
    assert len(heads) == 96 and heads[0].startswith("#1  ")
    assert "schedule: step" in text and "status: to do" in text and "seed: 2" in text
    assert "settings: " in text and "train.schedule.kind" in text  # the legend of the short column names


def test_wide_plan_keeps_the_boxed_table_and_names_abbreviated_columns(monkeypatch):
    text = _plan_text(monkeypatch, REPO / "studies" / "linearity.toml", 200)
    assert "┏" in text and "│ linear-mse " in text
    assert "settings: model.activation, model.batchnorm, model.dropout, model.hidden, model.kind, train.loss" in text


def test_setting_labels_are_the_shortest_unambiguous_suffix():
    keys = ["model.dropout", "train.schedule.kind", "model.kind", "train.schedule.gamma", "a.b", "x.a.b", "y.gamma"]
    assert ablate_console.setting_labels(keys) == [
        "dropout",
        "schedule",
        "kind",
        "schedule.gamma",
        "a.b",
        "x.a.b",
        "y.gamma",
    ]


def test_terminal_honours_columns_in_a_pipe(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert ablate_console.terminal().width == 100
    monkeypatch.delenv("COLUMNS")
    assert ablate_console.terminal().width == 240  # a pipe or a log: wide, not rich's 80


SEARCH = SEARCH_STUDY


def test_search_plan_warns_when_trials_never_leave_startup(monkeypatch):
    assert "\ntrials = 40\n" in SEARCH
    study = parse_study(SEARCH.replace("\ntrials = 40\n", "\ntrials = 6\n"), "s.toml")
    recorded = Console(width=120, record=True, highlight=False, file=io.StringIO())
    ablate_console.print_search_plan(study, recorded)
    text = " ".join(recorded.export_text().split())
    assert "warning:" in text and "search.trials" in text and "startup_trials" in text


def test_search_plan_fits_80_columns(monkeypatch):
    recorded = Console(width=80, record=True, highlight=False, file=io.StringIO())
    ablate_console.print_search_plan(parse_study(SEARCH, "s.toml"), recorded)
    text = recorded.export_text()
    assert not re.search(r"\S…", text)  # a cut word; a range's ' … ' stands alone
    assert "train.schedule.gamma" in text and "xavier_uniform" in text and max(map(len, text.splitlines())) <= 80


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _trial(name: str):
    return SimpleNamespace(
        stage=name, seed=0, hash=name * 12, settings=SimpleNamespace(train=SimpleNamespace(epochs=2))
    )


def _reporter(clock: FakeClock, slots: int = 2):
    out = Console(file=io.StringIO(), width=120, force_terminal=False)
    reporter = ablate_console.ConsoleReporter(out, clock=clock)
    workers = [SimpleNamespace(index=i, device="cpu", threads=1) for i in range(slots)]
    return reporter, workers


def test_eta_waits_for_a_finished_trial_then_follows_trial_durations():
    clock = FakeClock()
    reporter, (a, b) = _reporter(clock)
    reporter.start(5, 1, [a, b])  # 4 to train on 2 workers
    reporter.trial_started(_trial("p"), a)
    clock.now = 4.0
    reporter.trial_started(_trial("q"), b)
    reporter.epoch(_trial("p"), a, 1, 0.5)
    assert reporter.eta_seconds() is None  # no guess before a trial has finished
    clock.now = 10.0
    reporter.trial_finished(_trial("p"), a, SimpleNamespace(note="", test_accuracy=0.9, train_seconds=9.0))
    reporter.trial_started(_trial("r"), a)
    # trials take ~10 s: q ends in 4 s, r in 10, and the one waiting follows q on its worker: 14 s
    assert reporter.eta_seconds() == pytest.approx(14.0)
    clock.now = 13.0
    assert reporter.eta_seconds() == pytest.approx(11.0)  # counts down between events
    clock.now = 20.0  # q is late: its worker is taken to be free now
    assert reporter.eta_seconds() == pytest.approx(10.0)
    reporter.close()


def test_eta_is_smoothed_over_finished_trials():
    clock = FakeClock()
    reporter, (a,) = _reporter(clock, slots=1)
    reporter.start(10, 0, [a])
    for i, seconds in enumerate((10.0, 10.0, 40.0)):  # one slow trial moves the estimate, not to its own pace
        reporter.trial_started(_trial(str(i)), a)
        clock.now += seconds
        reporter.trial_finished(
            _trial(str(i)), a, SimpleNamespace(note="ok", test_accuracy=None, train_seconds=seconds)
        )
    assert reporter.eta_seconds() == pytest.approx(7 * 20.0)
    reporter.close()


def test_eta_counts_packed_trials_as_parallel():
    clock = FakeClock()
    reporter, (a,) = _reporter(clock, slots=1)
    reporter.start(4, 0, [a])
    for name in "pq":  # one worker trains a pack of two at once
        reporter.trial_started(_trial(name), a)
    clock.now = 10.0
    for name in "pq":
        reporter.trial_finished(_trial(name), a, SimpleNamespace(note="ok", test_accuracy=None, train_seconds=10.0))
    assert reporter.eta_seconds() == pytest.approx(10.0)  # two left, two at a time
    reporter.close()
