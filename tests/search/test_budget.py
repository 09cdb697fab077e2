"""Searching architectures under a parameter budget: settings inside one block (`model.blocks[3].out`), points over
`max_params` rejected before training, the base settings confirmed beside the winners, and `ablate followup`'s
leave-one-out ablation of the winner."""

from __future__ import annotations

import tomllib
from functools import partial

import mlflow
import optuna
import pytest

from ablate import search
from ablate.cli import main
from ablate.design import expand
from ablate.errors import SpecError
from ablate.spec import (
    ablation_text,
    parse_study,
    point_problem,
    resolve_point,
    survey_space,
    toml_value,
    winner_changes,
)

CNN = """
[study]
name = "tinycnn"
design = "search"
seeds = [0]

[data]
val_size = 200
train_limit = 600
test_limit = 200

[train]
epochs = 2
batch_size = 64
lr = 0.01
schedule = "constant"

[model]
kind = "cnn"
batchnorm = true
head = "gap"
blocks = [{{ out = 4 }}, {{ out = 4, pool = true }}, {{ out = 8, pool = true }},
          {{ out = 10, padding = 1, batchnorm = false, activation = "none" }}]

[tracking]
models = "none"

[search]
trials = {trials}
max_params = {budget}
startup_trials = 3
warmup_epochs = 0
confirm_top = 2
confirm_seeds = [5, 6]
confirm_base = true

[search.space]
"model.blocks[1].out" = {{ low = 2, high = 12 }}
"model.blocks[3].out" = {{ low = 4, high = 24 }}
"model.blocks[2].pool" = [true, false]
"train.schedule" = ["constant", {{ kind = "step", step_size = 1 }}]
"train.schedule.gamma" = {{ low = 0.1, high = 0.9, when = {{ "train.schedule" = {{ kind = "step", step_size = 1 }} }} }}
"train.lr" = {{ low = 0.005, high = 0.1, log = true }}
"""


def _study(trials: int = 6, budget: int = 2500, path: str = "<study>"):
    return parse_study(CNN.format(trials=trials, budget=budget), path)


def test_a_block_setting_changes_that_block_only():
    study = _study()
    stage = resolve_point(study, (("model.blocks[3].out", 20), ("model.blocks[2].pool", False)))
    assert [(b.out, b.pool, b.batchnorm) for b in stage.model.blocks] == [
        (4, False, True),
        (4, False, True),
        (20, True, True),
        (10, False, False),
    ]
    base = resolve_point(study, ())
    assert [b.out for b in base.model.blocks] == [4, 4, 8, 10]  # the study's own list is untouched


def test_a_whole_block_can_be_a_choice_and_a_grid_axis_can_name_a_block():
    grid = CNN.format(trials=1, budget=1).split("[search]")[0].replace('design = "search"', 'design = "grid"')
    grid += (
        '[grid]\n"model.blocks[1]" = [{ out = 4 }, { out = 6, batchnorm = false }]\n"model.blocks[3].out" = [8, 12]\n'
    )
    study = parse_study(grid)
    firsts = {(s.model.blocks[0].out, s.model.blocks[0].batchnorm, s.model.blocks[2].out) for s in study.stages}
    assert firsts == {(4, True, 8), (4, True, 12), (6, False, 8), (6, False, 12)}
    assert len({t.hash for t in expand(study)}) == 4


@pytest.mark.parametrize(
    ("old", "new", "path", "needle"),
    [
        (
            '"model.blocks[3].out" = {',
            '"model.blocks[9].out" = {',
            'search.space."model.blocks[9].out"',
            "has 4 items, numbered from 1",
        ),
        ('"model.blocks[3].out" = {', '"model.head[1].out" = {', 'search.space."model.head[1].out"', "not a setting"),
        (
            '"model.blocks[3].out" = { low = 4',
            '"model.blocks[3].out" = { low = 0',
            'search.space."model.blocks[3].out"',
            "must be ≥ 1",
        ),
    ],
)
def test_bad_block_paths_are_named(old, new, path, needle):
    with pytest.raises(SpecError) as error:
        parse_study(CNN.format(trials=4, budget=2500).replace(old, new))
    assert error.value.path == path and needle in error.value.message


def test_a_budget_nothing_fits_is_refused_at_plan_time():
    survey = survey_space(_study(budget=2500))
    smallest, largest = survey.ranges["max_params"]
    assert 0 < survey.fit < survey.drawn and smallest < 2500 < largest
    with pytest.raises(SpecError) as error:
        _study(budget=100)
    assert (
        error.value.path == "search.max_params" and f"{smallest:,} – {largest:,} parameters seen" in error.value.message
    )


def test_a_compute_budget_rejects_what_costs_too_much():
    text = CNN.format(trials=6, budget=100_000).replace("max_params = 100000", "max_params = 100000\nmax_macs = 200000")
    study = parse_study(text)
    survey = survey_space(study)
    low, high = survey.ranges["max_macs"]
    assert low < 200_000 < high and 0 < survey.fit < survey.drawn
    wide = resolve_point(study, (("model.blocks[1].out", 12), ("model.blocks[2].pool", False)))
    assert "MACs > max_macs 200,000" in point_problem(study, wide)
    assert point_problem(study, resolve_point(study, ())) is None


def test_points_over_the_budget_are_rejected_before_training_and_tpe_learns_to_avoid_them(tmp_path):
    text = CNN.format(trials=14, budget=2500)  # a budget of 14 trained points: ask returns None beyond it
    study = parse_study(text, str(tmp_path / "s.toml"))
    storage = str(tmp_path / "journal.log")
    _create(study, storage)
    for index in range(14):
        asked = search.ask(search.SearchTask(index, storage, study.path, text))
        assert asked.trial.params_count <= 2500  # never an over-budget trial handed to a worker
        asked.complete(asked.trial.params_count / 2500)  # any score
    loaded = optuna.load_study(study_name=search.optuna_name(study), storage=search.open_storage(storage))
    # The random start draws among the points that train: the first startup_trials asks reject nothing.
    assert not any(t.user_attrs.get(search.REJECTED_ATTR) for t in loaded.trials[:3])
    rejected = [t for t in loaded.trials if t.user_attrs.get(search.REJECTED_ATTR)]
    assert rejected, "the space is mostly over budget: some points must have been rejected"
    for trial in rejected:
        assert trial.state == optuna.trial.TrialState.PRUNED and not trial.intermediate_values
        why = trial.user_attrs[search.REJECTED_ATTR]
        assert (trial.constraints["max_params"] > 0 and "parameters > max_params 2,500" in why) or (
            trial.constraints["fits"] > 0 and "does not fit" in why
        )
    assert search.finished_count(loaded) == 14 and search.rejected_count(loaded) == len(rejected)
    # With the rejections told to TPE as infeasible, it stops proposing them; told FAIL, it proposed one point
    # thousands of times in a row.
    assert len(rejected) < 60


def _create(study, storage: str) -> optuna.Study:
    """The Optuna study as `ablate run` creates it before any worker asks: with its random start enqueued."""
    return search.open_study(
        study.search,
        storage,
        search.optuna_name(study),
        search.trial_epochs(study),
        on_create=partial(search.set_up_new, study),
    )


def _drive_search(study, storage: str, scores: dict, asks: int | None = None) -> optuna.Study:
    _create(study, storage)
    for index in range(study.search.settings.trials if asks is None else asks):
        asked = search.ask(search.SearchTask(index, storage, study.path, study.text))
        asked.complete(scores.get(asked.number, 0.5))
    return optuna.load_study(study_name=search.optuna_name(study), storage=search.open_storage(storage))


def test_the_base_settings_are_confirmed_first_and_a_top_point_equal_to_them_is_one_arm(tmp_path):
    study = _study(trials=7, path=str(tmp_path / "s.toml"))
    storage = str(tmp_path / "journal.log")
    loaded = _drive_search(study, storage, {}, asks=6)  # the budget's 7th trial is the enqueued point below
    base_point = [
        ["train.schedule", "constant"],
        ["train.lr", 0.01],
        ["model.blocks[1].out", 4],
        ["model.blocks[3].out", 8],
        ["model.blocks[2].pool", True],
    ]
    loaded.enqueue_trial(
        {
            "model.blocks[1].out": 4,
            "model.blocks[3].out": 8,
            "model.blocks[2].pool": "true",
            "train.schedule": "constant",
            "train.lr": 0.01,
        }
    )
    asked = search.ask(search.SearchTask(6, storage, study.path, study.text))
    assert sorted(map(tuple, asked.asked.user_attrs[search.POINT_ATTR])) == sorted(map(tuple, base_point))
    asked.complete(0.99)  # the base settings, found by the search, score best
    arms, trials = search.confirm_trials(study, loaded)
    assert arms[0].name == f"base = top1 (trial {asked.number})" and len(arms) == 2
    assert [a.index for a in arms] == [0, 1] and arms[1].name.startswith("top2")
    assert len(trials) == 4 and {t.seed for t in trials} == {5, 6}
    assert (arms[0].model, arms[0].train) == (resolve_point(study, ()).model, resolve_point(study, ()).train)


def test_followup_undoes_each_change_alone_with_blocks_and_conditions_grouped():
    study = _study()
    point = (
        ("model.blocks[1].out", 6),
        ("model.blocks[3].out", 8),
        ("model.blocks[2].pool", False),
        ("train.schedule", {"kind": "step", "step_size": 1}),
        ("train.schedule.gamma", 0.5),
        ("train.lr", 0.01),
    )
    changes = winner_changes(study, point)
    # blocks[3].out = 8 and lr 0.01 are the base's own values; widths are one change, gamma goes with its schedule
    assert [c.arm for c in changes] == ["undo-blocks.out", "undo-blocks.pool", "undo-schedule"]
    assert changes[0].base == (("model.blocks[1].out", 4), ("model.blocks[3].out", 8))
    assert dict(changes[2].winner) == {"train.schedule": {"kind": "step", "step_size": 1}, "train.schedule.gamma": 0.5}
    text = ablation_text(study, point, changes, "tinycnn-winner", (5, 6), "# a header")
    written = parse_study(text)
    arms = {s.name: s for s in written.stages}
    assert list(arms) == ["winner", "undo-blocks.out", "undo-blocks.pool", "undo-schedule", "base"]
    winner = resolve_point(study, point)
    assert (arms["winner"].model, arms["winner"].train) == (winner.model, winner.train)
    assert arms["undo-schedule"].train.schedule.kind == "constant" and arms["undo-schedule"].model == winner.model
    base = resolve_point(study, ())
    assert (arms["base"].model, arms["base"].train) == (base.model, base.train)
    assert written.info.seeds == (5, 6) and written.info.design == "ablation"
    assert tomllib.loads(text)["study"]["baseline"] == "winner"


@pytest.mark.parametrize("value", [0.05, 1e-05, 3.0, 7, True, 'a "quoted" name', [1, 2.5], {"kind": "step", "x": [1]}])
def test_toml_values_read_back_as_written(value):
    assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value


OVER_BUDGET = {
    "model.blocks[1].out": 12,
    "model.blocks[3].out": 24,
    "model.blocks[2].pool": False,
    "train.schedule": "constant",
    "train.lr": 0.01,
}


@pytest.mark.slow
def test_a_budgeted_search_confirms_against_base_and_its_followup_runs(write_study, tmp_path, new_store, capsys):
    store = new_store()
    path = write_study(CNN.format(trials=5, budget=2500))
    # Which points TPE proposes after its random start depends on the scores, so on the host's floats: a point over
    # the budget is queued after the random start, so that the search rejects one (and the report says so) anywhere.
    study = parse_study(path.read_text(), str(path))
    assert "max_params 2,500" in point_problem(study, resolve_point(study, tuple(OVER_BUDGET.items())))
    _create(study, str(tmp_path / "optuna-journal.log")).enqueue_trial(  # the journal beside the store, as ablate's
        {key: str(value).lower() if isinstance(value, bool) else value for key, value in OVER_BUDGET.items()}
    )
    assert main(["run", str(path), "--tracking-uri", store, "--max-workers", "2"]) == 0
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["tinycnn"])
    searched = runs[runs["tags.role"] == "search"]
    assert len(searched) == 5 and (searched["metrics.params_count"] <= 2500).all()
    confirmed = runs[runs["tags.role"] == "trial"]
    assert confirmed["tags.stage"].str.startswith("base").sum() == 2  # the base settings, on both confirm seeds

    report = tmp_path / "r.md"
    assert main(["report", "--tracking-uri", store, "--study", "tinycnn", "--out", str(report), "--no-figures"]) == 0
    text = report.read_text()
    assert "Δ vs base" in text and "rejected" in text and "`base` is the unsearched settings" in text
    picked = text.split("`ablate followup` ablates '")[1].split("'")[0]  # the report names what followup will pick

    out = tmp_path / "winner.toml"
    assert main(["followup", str(path), "--tracking-uri", store, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"winner: {picked} (" in printed and f"wrote {out}" in printed
    assert main(["followup", str(path), "--tracking-uri", store, "--out", str(out)]) == 2  # never overwritten silently
    followup = parse_study(out.read_text())
    assert followup.info.baseline == "winner" and followup.info.seeds == (5, 6)
    assert main(["run", str(out), "--tracking-uri", store]) == 0
    winner_runs = mlflow.search_runs(experiment_names=["tinycnn-winner"])
    assert (winner_runs.query("`tags.role` == 'trial'")["status"] == "FINISHED").sum() == 2 * len(followup.stages)


def test_followup_undoes_a_cnn_wide_default_to_the_schema_default():
    """A CNN's `dropout` is folded into its blocks when resolved (left unset on the model): undoing it writes the
    schema's default, not an unset value TOML cannot hold."""
    study = parse_study(CNN.format(trials=6, budget=2500) + '"model.dropout" = { low = 0.0, high = 0.3 }\n')
    point = (("model.blocks[1].out", 6), ("model.dropout", 0.2))
    changes = winner_changes(study, point)
    assert [c.base for c in changes] == [(("model.blocks[1].out", 4),), (("model.dropout", 0.0),)]
    arms = {
        s.name: s
        for s in parse_study(ablation_text(study, point, winner_changes(study, point), "w", (5, 6), "#")).stages
    }
    assert {b.dropout for b in arms["undo-dropout"].model.blocks[:-1]} == {0.0}
    assert {b.dropout for b in arms["winner"].model.blocks[:-1]} == {0.2}


def test_followup_keeps_the_dataset_and_states_what_the_winner_switched_off():
    text = CNN.format(trials=6, budget=2500).replace("seeds = [0]", 'seeds = [0]\ndataset = "fashion-mnist"')
    text = text.replace("lr = 0.01\n", 'lr = 0.01\noptimizer = "sgd"\nmomentum = 0.9\n')
    study = parse_study(text + '"train.optimizer" = ["sgd", "adam"]\n')
    point = (("model.blocks[1].out", 6), ("train.optimizer", "adam"))
    written = parse_study(ablation_text(study, point, winner_changes(study, point), "w", (5, 6), "#"))
    assert written.info.dataset == "fashion-mnist"
    arms = {s.name: s for s in written.stages}
    assert (arms["winner"].train.optimizer, arms["winner"].train.momentum) == ("adam", 0.0)  # as it trained
    assert (arms["undo-optimizer"].train.optimizer, arms["undo-optimizer"].train.momentum) == ("sgd", 0.9)


def test_samplers_blind_to_rejections_are_refused_with_a_budget():
    with pytest.raises(SpecError) as error:
        parse_study(
            CNN.format(trials=6, budget=2500).replace("startup_trials = 3", 'startup_trials = 3\nsampler = "gp"')
        )
    assert error.value.path == "search.sampler" and "use 'tpe' or 'random'" in error.value.message


def test_a_block_setting_means_nothing_for_a_stage_without_blocks():
    text = CNN.format(trials=6, budget=100_000).replace(
        "[search]",
        """[[stage]]
name = "c"

[[stage]]
name = "m"
model = { kind = "mlp", hidden = [32] }

[search]""",
    )
    study = parse_study(text + '"stage" = ["c", "m"]\n')
    mlp = resolve_point(study, (("stage", "m"), ("model.blocks[2].out", 8)))
    assert mlp.model.kind == "mlp" and dict(mlp.point) == {"stage": "m"}  # dropped, as a grid drops it
    cnn = resolve_point(study, (("stage", "c"), ("model.blocks[2].out", 8)))
    assert cnn.model.blocks[1].out == 8


def test_confirm_top_zero_confirms_nothing_but_the_base(tmp_path):
    study = parse_study(
        CNN.format(trials=4, budget=2500).replace("confirm_top = 2", "confirm_top = 0"), str(tmp_path / "s.toml")
    )
    loaded = _drive_search(study, str(tmp_path / "journal.log"), {})
    assert search.best_points(loaded, 0) == []


def test_followup_names_a_setting_it_cannot_undo():
    study = parse_study(CNN.format(trials=6, budget=2500) + '"train.grad_clip" = { low = 0.5, high = 5.0 }\n', "x.toml")
    with pytest.raises(SpecError) as error:
        winner_changes(study, (("train.grad_clip", 1.0),))
    assert error.value.file == "x.toml" and error.value.path == 'search.space."train.grad_clip"'
    assert "cannot unset a key" in error.value.message
