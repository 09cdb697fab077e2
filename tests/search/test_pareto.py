"""A search of several objectives: the spec, the Pareto front and the points of it confirmed, the report's front table
and figure, and `ablate followup --point`."""

from __future__ import annotations

import time

import mlflow
import optuna
import pytest

from ablate import search
from ablate.cli import main
from ablate.search import POINT_ATTR
from ablate.spec import parse_study
from tests._helpers import TINY_SEARCH, spec_error_at

SEARCH = TINY_SEARCH.format(trials=4)


def _with(lines: str, text: str = SEARCH) -> str:
    """The tiny search with these [search] keys added."""
    return text.replace("confirm_top = 2\n", f"confirm_top = 2\n{lines}\n")


def test_several_objectives_infer_their_directions_and_do_without_a_pruner():
    settings = parse_study(_with('objectives = ["val_accuracy", "params", "train_seconds"]')).search.settings
    assert settings.several and settings.objective == "val_accuracy" and settings.pruner == "none"
    assert settings.optuna_directions == ("maximize", "minimize", "minimize")
    given = parse_study(_with('objectives = ["val_loss", "macs"]\ndirections = ["minimize", "maximize"]'))
    assert given.search.settings.optuna_directions == ("minimize", "maximize")


def test_one_objective_in_a_list_is_the_same_search_as_objective():
    listed = parse_study(_with('objectives = ["val_loss"]\ndirections = ["maximize"]'))
    written = parse_study(_with('objective = "val_loss"\ndirection = "maximize"'))
    assert listed.search.settings == written.search.settings and not listed.search.settings.several
    assert search.optuna_name(listed) == search.optuna_name(written)
    several = parse_study(_with('objectives = ["val_loss", "params"]'))
    assert search.optuna_name(several) not in (search.optuna_name(written), search.optuna_name(parse_study(SEARCH)))


@pytest.mark.parametrize("lines, path, needle", [
    ('objective = "val_accuracy"\nobjectives = ["val_accuracy", "params"]', "search.objectives", "not both"),
    ('objectives = ["params", "val_accuracy"]', "search.objectives[1]", "must be the validation metric"),
    ('objectives = ["val_accuracy", "val_loss"]', "search.objectives[2]", "one validation metric only"),
    ('objectives = ["val_accuracy", "params", "params"]', "search.objectives[3]", "twice"),
    ('objectives = ["val_accuracy", "flops"]', "search.objectives[2]", "allowed: 'val_accuracy'"),
    ("objectives = []", "search.objectives", "must list the validation metric"),
    ('objectives = ["val_accuracy", "params"]\ndirections = ["maximize"]', "search.directions", "one direction per"),
    ('directions = ["maximize"]', "search.directions", "goes with search.objectives"),
    ('objectives = ["val_accuracy", "params"]\ndirection = "maximize"', "search.direction", "search.directions"),
    ('objectives = ["val_accuracy", "params"]\nsampler = "cmaes"', "search.sampler", "optimises one objective"),
    ('objectives = ["val_accuracy", "params"]\npruner = "median"', "search.pruner", 'pruner = "none"'),
])
def test_bad_combinations_of_objectives_are_refused_at_their_key(lines, path, needle):
    spec_error_at(_with(lines), path, needle)


def _front_study(values: list[tuple[float, float]]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, told in enumerate(values):
        study.add_trial(optuna.trial.create_trial(values=list(told), params={"x": float(i)},
                                                  distributions={"x": optuna.distributions.FloatDistribution(0, 99)},
                                                  user_attrs={POINT_ATTR: [["train.lr", i]]}))
    return study


def test_the_confirm_phase_takes_points_spread_along_the_front():
    # trials 0-4 on the front (accuracy rises with cost), 5 and 6 dominated, 7 the point of trial 4 again
    values = [(0.5, 10), (0.6, 20), (0.7, 30), (0.8, 40), (0.9, 50), (0.55, 30), (0.85, 60)]
    study = _front_study(values)
    study.add_trial(optuna.trial.create_trial(values=[0.9, 50], user_attrs={POINT_ATTR: [["train.lr", 4]]}))
    assert [t.number for t in search.front(study)] == [4, 3, 2, 1, 0]  # best on validation first; a point once
    assert [t.number for t, _ in search.front_points(study, 3)] == [4, 2, 0]  # both ends and the middle
    assert [t.number for t, _ in search.front_points(study, 1)] == [4]
    assert [t.number for t, _ in search.front_points(study, 9)] == [4, 3, 2, 1, 0]  # no more than the front
    assert [t.number for t, _ in search.front_points(study, 2, lambda p: p != (("train.lr", 0),))] == [4, 1]


# A tiny Pareto search: networks of very different sizes, so that the front trades accuracy for parameters. The first
# two points are queued (the smallest and the largest network), so that the front has two points on any host.
PARETO = """
[study]
name = "pareto"
design = "search"
seeds = [0]

[data]
val_size = 500
train_limit = 1000
test_limit = 500

[model]
kind = "mlp"
hidden = [16]

[train]
epochs = 1
batch_size = 100
lr = 0.01

[tracking]
models = "none"

[search]
trials = 5
objectives = ["val_accuracy", "params"]
sampler = "nsgaii"
startup_trials = 3
confirm_top = 2
confirm_seeds = [7, 8]

[search.space]
"model.hidden" = [[2], [16], [64]]
"train.lr" = { low = 3e-3, high = 3e-2, log = true }
"""
FIRST = [{"model.hidden": "[2]", "train.lr": 0.01}, {"model.hidden": "[64]", "train.lr": 0.01}]


def _mlp_params(hidden: int) -> int:
    return 784 * hidden + hidden + hidden * 10 + 10


@pytest.mark.slow
def test_a_pareto_search_confirms_front_points_reports_them_and_follows_one_up(write_study, tmp_path, new_store,
                                                                                capsys):
    started = time.perf_counter()
    store, path = new_store(), write_study(PARETO, "pareto.toml")
    study = parse_study(path.read_text(), str(path))
    journal = str(tmp_path / "optuna-journal.log")  # beside the store, ablate's default
    queued = search.open_study(study.search, journal, search.optuna_name(study), search.trial_epochs(study))
    for point in FIRST:
        queued.enqueue_trial(point)
    assert main(["run", str(path), "--tracking-uri", store, "--max-workers", "1"]) == 0

    loaded = optuna.load_study(study_name=search.optuna_name(study), storage=search.open_storage(journal))
    assert loaded.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert loaded.metric_names == ["val_accuracy", "params"]
    complete = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 5 and all(  # the second objective is the network's size, told before any training
        t.values[1] == _mlp_params(dict(t.user_attrs[POINT_ATTR])["model.hidden"][0]) for t in complete)
    front = {t.number for t in loaded.best_trials}
    assert {0, 1} & front and len(search.front(loaded)) >= 2  # the smallest network, or the largest, is on it
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["pareto"])
    confirmed = runs[runs["tags.role"] == "trial"]
    numbers = {int(s.split("(trial ")[1].rstrip(")")) for s in confirmed["tags.stage"]}
    assert numbers <= front and len(numbers) == 2 and len(confirmed) == 4  # two front points, on both seeds
    assert set(confirmed["tags.seed"]) == {"7", "8"} and (confirmed["status"] == "FINISHED").all()

    out = tmp_path / "report" / "pareto.md"
    assert main(["report", "--tracking-uri", store, "--study", "pareto", "--out", str(out)]) == 0
    text = out.read_text()
    assert "### Search (val_accuracy, params)" in text and "![Pareto front](pareto-pareto.png)" in text
    assert "Pareto front (maximize val_accuracy, minimize params)" in text
    assert "| point " in text and "test accuracy (%)" in text and "95% CI" in text
    figure = out.parent / "pareto-pareto.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    assert not (out.parent / "pareto-history.png").exists()  # no single objective's history

    capsys.readouterr()
    assert main(["followup", str(path), "--tracking-uri", store]) == 2  # several objectives: no one winner
    refused = capsys.readouterr().err
    assert "--point" in refused and "top1 (trial" in refused and "top2 (trial" in refused
    assert main(["followup", str(path), "--tracking-uri", store, "--point", "99"]) == 2
    top2 = next(int(s.split("(trial ")[1].rstrip(")")) for s in confirmed["tags.stage"] if s.startswith("top2"))
    written = tmp_path / "point.toml"
    assert main(["followup", str(path), "--tracking-uri", store, "--point", str(top2), "--out", str(written)]) == 0
    assert f"chosen: top2 (trial {top2})" in capsys.readouterr().out
    followup = parse_study(written.read_text())
    assert followup.info.name == f"pareto-trial{top2}" and followup.info.design == "ablation"
    assert followup.info.baseline == "winner" and followup.info.seeds == (7, 8)
    assert "a point of the Pareto front" in written.read_text()
    by_name = tmp_path / "by-name.toml"
    assert main(["followup", str(path), "--tracking-uri", store, "--point", "top2", "--out", str(by_name)]) == 0
    arms = [[(s.name, s.model, s.train) for s in parse_study(f.read_text()).stages] for f in (by_name, written)]
    assert arms[0] == arms[1]  # top2 and its trial number name one point
    print(f"pareto end to end: {time.perf_counter() - started:.0f} s")


def test_a_worker_tells_the_validation_metric_then_each_cost_in_order(write_study, tmp_path):
    path = write_study(_with('objectives = ["val_loss", "macs", "train_seconds", "params"]'))
    task = search.SearchTask(0, str(tmp_path / "journal.log"), str(path), path.read_text())
    asked = search.ask(task)  # asks for a point; trains nothing
    hidden = 32
    assert asked.costs == ("macs", "train_seconds", "params") and asked.known["params"] == _mlp_params(hidden)
    assert asked.known["macs"] == 784 * hidden + hidden * 10  # a linear layer's multiply-accumulates per image
    assert not asked.should_prune(1, {"val_loss": 0.5})  # Optuna takes no intermediate value of several objectives
    values = asked.values([{"val_loss": 0.7}, {"val_loss": 0.5}], tested_epoch=2, train_seconds=3.5)
    assert values == [0.5, asked.known["macs"], 3.5, _mlp_params(hidden)]
    assert asked.complete(values) and asked.optuna_study.trials[0].values == values
