"""Grid and ablation designs: expansion, exclusion, no-op merging, pairing, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ablate.design import expand, expand_design
from ablate.errors import SpecError
from ablate.spec import load_study, parse_study
from tests._helpers import spec_error_at
from tests.conftest import REPO

GRID = """
[study]
name = "g"
design = "grid"
seeds = [0, 1]

[model]
kind = "mlp"
hidden = [64]

[grid]
"train.init" = ["default", "xavier_uniform"]
"model.dropout" = [0.0, 0.5]
"train.schedule" = ["constant", { kind = "step", step_size = 2 }, "cosine"]
"""


def test_grid_is_the_cartesian_product_times_seeds():
    design = expand_design(parse_study(GRID))
    assert len(design.trials) == 2 * 2 * 3 * 2 and not design.merged
    first = design.trials[0]
    assert first.stage == "init=default dropout=0.0 schedule=constant"
    assert [t.seed for t in design.trials[:2]] == [0, 1]  # every point runs every seed: paired comparisons
    names = [t.stage for t in design.trials]
    assert "init=xavier_uniform dropout=0.5 schedule=step(step_size=2)" in names
    step = next(t for t in design.trials if "step" in t.stage)
    assert step.settings.train.schedule.step_size == 2 and step.settings.model.hidden == (64,)  # fixed settings kept
    assert step.changes == "train.schedule=step(step_size=2)"


def test_grid_crosses_stages():
    text = (
        GRID.replace('"train.init" = ["default", "xavier_uniform"]\n', "")
        + """
[[stage]]
name = "narrow"

[[stage]]
name = "wide"
model = { hidden = [128] }
"""
    )
    trials = expand(parse_study(text))
    assert len(trials) == 2 * 2 * 3 * 2
    assert trials[0].stage == "narrow dropout=0.0 schedule=constant"
    assert {t.settings.model.hidden for t in trials if t.stage.startswith("wide")} == {(128,)}


def test_exclude_removes_matching_points():
    text = (
        GRID
        + """
[[exclude]]
"train.init" = "xavier_uniform"
"model.dropout" = 0.5

[[exclude]]
"train.schedule" = ["cosine"]
"""
    )
    study = parse_study(text)
    assert study.excluded == 3 + 4 - 1  # (xavier, 0.5, any) ∪ (any, any, cosine): 3 + 4 − 1
    names = {t.stage for t in expand(study)}
    assert len(names) == 12 - 6 and not any("cosine" in n for n in names)
    assert not any("xavier_uniform dropout=0.5" in n for n in names)


def test_no_op_grid_points_merge_into_one_trial():
    text = GRID.replace('"train.init" = ["default", "xavier_uniform"]', '"train.schedule.gamma" = [0.1, 0.5]')
    design = expand_design(parse_study(text))
    # gamma means something only for the step schedule: constant and cosine points differ in nothing.
    assert len({t.stage for t in design.trials}) == 2 * (1 + 2 + 1)
    assert len(design.merged) == 2 * 2
    assert len({t.hash for t in design.trials}) == len(design.trials)
    assert "dropout=0.0 schedule=constant" in {t.stage for t in design.trials}  # dropped axes leave the name
    written, kept = design.merged[0]
    assert "train.schedule.gamma=0.5" in written and kept == "dropout=0.0 schedule=constant"


def test_contradiction_made_by_an_axis_is_a_no_op_not_an_error():
    text = GRID.replace(
        '"train.init" = ["default", "xavier_uniform"]',
        '"train.optimizer" = ["sgd", "adam"]\n"train.momentum" = [0.0, 0.9]',
    )
    design = expand_design(parse_study(text))
    adam = [t for t in design.trials if t.settings.train.optimizer == "adam"]
    assert {t.settings.train.momentum for t in adam} == {0.0}
    assert len(design.merged) == 2 * 3  # adam × momentum 0.9 is adam × momentum 0.0


def test_plan_counts_merged_and_excluded(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(
        GRID.replace('"train.init" = ["default", "xavier_uniform"]', '"train.schedule.gamma" = [0.1, 0.5]')
        + '\n[[exclude]]\n"model.dropout" = 0.5\n"train.schedule" = "cosine"\n'
    )
    store = f"sqlite:///{tmp_path / 'none.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "ablate", "plan", str(path), "--tracking-uri", store],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    summary = " ".join(done.stdout.split())  # rich wraps long lines at the pipe's 80 columns
    assert "14 trials: 7 arms × 2 seeds" in summary
    assert "grid of 12 points, 2 excluded by [[exclude]], 3 merged" in summary
    as_json = subprocess.run(
        [sys.executable, "-m", "ablate", "plan", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    document = json.loads(as_json.stdout)
    assert document["count"] == 14 and document["excluded"] == 2 and len(document["merged"]) == 3


@pytest.mark.parametrize(
    ("axes", "path", "needle"),
    [
        ('"model.dropuot" = [0.0, 0.5]', 'grid."model.dropuot"', "did you mean 'dropout'"),
        ('"train.lrr" = [0.1]', 'grid."train.lrr"', "did you mean 'lr'"),
        ('"dropout" = [0.1]', 'grid."dropout"', "starting with data., train. or model."),
        ('"modle.dropout" = [0.1]', 'grid."modle.dropout"', "did you mean 'model'"),
        ('"model.dropout" = [0.1, 1.5]', 'grid."model.dropout"', "[0, 1)"),
        ('"model.dropout" = []', 'grid."model.dropout"', "non-empty list"),
        ('"model.dropout" = [0.1, 0.1]', 'grid."model.dropout"', "lists 0.1 twice"),
        (
            '"train.momentum" = [0.0, 0.9]',
            'grid."train.momentum"',
            "has no effect in any grid point: applies only to optimizer 'sgd'",
        ),
        (
            '"train.schedule.gamma" = [0.1, 0.5]',
            'grid."train.schedule.gamma"',
            "has no effect in any grid point: applies only to schedule kinds",
        ),
        ('"train.schedule" = ["constant", "step"]', 'grid."train.schedule"', "needs `step_size`"),
        ('"model.dropout" = 0.5', 'grid."model.dropout"', "must be a non-empty list"),
    ],
)
def test_bad_axes_are_rejected(axes, path, needle):
    text = '[study]\nname = "g"\ndesign = "grid"\n[model]\nkind = "mlp"\n[grid]\n' + axes + "\n"
    spec_error_at(text, path, needle)


@pytest.mark.parametrize(
    ("rule", "path", "needle"),
    [
        ('"model.dropuot" = 0.5', 'exclude[1]."model.dropuot"', "not a grid axis (did you mean 'model.dropout'?)"),
        ('"model.dropout" = 0.3', 'exclude[1]."model.dropout"', "0.3 is not a value of this axis; it takes: 0.0, 0.5"),
        ('"model.dropout" = [0.0, 0.5]', "exclude", "excludes every grid point"),
    ],
)
def test_bad_exclude_rules_are_rejected(rule, path, needle):
    spec_error_at(GRID + "\n[[exclude]]\n" + rule + "\n", path, needle)


ABLATION = """
[study]
name = "a"
design = "ablation"
seeds = [0, 1, 2]

[model]
kind = "mlp"
hidden = [64]
dropout = 0.2
batchnorm = true

[train]
schedule = "cosine"

[[arm]]
name = "no-dropout"
model = { dropout = 0.0 }

[[arm]]
name = "no-bn-no-dropout"
description = "two factors at once"
model = { dropout = 0.0, batchnorm = false }

[[arm]]
name = "constant-lr"
train = { schedule = "constant" }
"""


def test_ablation_is_baseline_plus_arms_each_compared_with_the_baseline():
    trials = expand(parse_study(ABLATION))
    assert [t.stage for t in trials[::3]] == ["baseline", "no-dropout", "no-bn-no-dropout", "constant-lr"]
    assert {t.seed for t in trials if t.stage == "constant-lr"} == {0, 1, 2}
    changes = {t.stage: t.changes for t in trials}
    assert changes["baseline"] == "baseline"
    assert changes["no-dropout"] == "model.dropout=0.0"
    assert changes["no-bn-no-dropout"] == "model.dropout=0.0, model.batchnorm=false"  # vs baseline, not the arm before
    assert changes["constant-lr"] == "train.schedule=constant"
    named = parse_study(ABLATION.replace("seeds = [0, 1, 2]", 'seeds = [0, 1, 2]\nbaseline = "full"'))
    assert named.stages[0].name == "full"


@pytest.mark.parametrize(
    ("change", "path", "needle"),
    [
        (
            lambda t: t + '\n[[arm]]\nname = "same"\nmodel = { dropout = 0.2 }\n',
            "arm[4]",
            "same settings as 'baseline'",
        ),
        (
            lambda t: t + '\n[[arm]]\nname = "no-dropout"\nmodel = { dropout = 0.1 }\n',
            "arm[4].name",
            "already the name of arm[1]",
        ),
        (
            lambda t: t + '\n[[arm]]\nname = "baseline"\nmodel = { dropout = 0.1 }\n',
            "arm[4].name",
            "already the name of the baseline",
        ),
        (
            lambda t: t + '\n[[arm]]\nname = "x"\nmodel = { dropuot = 0.1 }\n',
            "arm[4].model.dropuot",
            "did you mean 'dropout'",
        ),
        (
            lambda t: t + '\n[[stage]]\nname = "x"\n',
            "stage",
            "belongs to design 'ladder' or 'grid' or 'search', not 'ablation'",
        ),
        (lambda t: t.split("[[arm]]")[0], "arm", "at least one [[arm]]"),
        (lambda t: t.replace('"ablation"', '"grid"'), "arm", "belongs to design 'ablation', not 'grid'"),
        (lambda t: t.replace('"ablation"', '"ladder"'), "arm", "belongs to design 'ablation', not 'ladder'"),
        (lambda t: t.replace('"ablation"', '"ablaton"'), "study.design", "did you mean 'ablation'"),
    ],
)
def test_bad_ablations_are_rejected(change, path, needle):
    spec_error_at(change(ABLATION), path, needle, expand=True)


def test_errors_in_an_arm_name_it_and_keep_the_key_path():
    error = spec_error_at(ABLATION + '\n[[arm]]\nname = "x"\nmodel = { dropuot = 0.1 }\n', "arm[4].model.dropuot")
    assert str(error).startswith('bad.toml: arm[4] ("x").model.dropuot: unknown key')


@pytest.mark.parametrize("name", ["linearity", "classics", "fc-baseline", "cnn8k", "ablations"])
def test_committed_studies_are_valid(name):
    design = expand_design(load_study(REPO / "studies" / f"{name}.toml"))
    assert len({t.seed for t in design.trials}) >= 2 and not design.merged


def test_committed_studies_match_their_reference_systems():
    cnn = {t.stage: t for t in expand(load_study(REPO / "studies" / "cnn8k.toml"))}
    assert [cnn[m].params_count for m in ("model1", "model2", "model3")] == [7_616, 7_798, 7_762]
    assert cnn["model3"].settings.train.schedule.kind == "onecycle"
    assert cnn["model3"].settings.train.augment.rotation == 7.0
    fc = expand(load_study(REPO / "studies" / "fc-baseline.toml"))[0]
    assert fc.params_count == 235_146 and fc.settings.data.val_size == 12_000
    assert fc.settings.train.early_stopping.patience == 5 and fc.settings.train.early_stopping.min_delta == 0.001
    grid = load_study(REPO / "studies" / "ablations.toml")
    assert len(grid.axes) == 4 and len(grid.stages) >= 2 * 2 * 2 * 3
    classics = {t.stage: t for t in expand(load_study(REPO / "studies" / "classics.toml"))}
    assert classics["V2"].params_count == 7_740 and classics["V1"].settings.model.output_activation == "relu"


@pytest.mark.parametrize(
    ("text", "path", "needle"),
    [
        # [[exclude]] leaves an axis with a single value that means nothing
        (
            '"train.optimizer" = ["adam", "sgd"]\n"train.momentum" = [0.0, 0.9]\n'
            '[[exclude]]\n"train.optimizer" = "sgd"',
            'grid."train.momentum"',
            "has no effect in any grid point: applies only to optimizer 'sgd'",
        ),
        # every value resolves to the same settings (a model-level dropout the blocks override)
        ('"model.dropout" = [0.0, 0.5]', 'grid."model.dropout"', "every value resolves to the same settings"),
        # a contradiction inside one axis value is the user's, not a no-op
        (
            '"train.schedule" = [{ kind = "constant", gamma = 0.5 }, "cosine"]',
            'grid."train.schedule"',
            "applies only to schedule kinds",
        ),
    ],
)
def test_axes_without_effect_or_with_contradictions(text, path, needle):
    model = '[model]\nkind = "cnn"\nblocks = [{ out = 4, dropout = 0.1 }, { out = 4, dropout = 0.1 }]\n'
    study = f'[study]\nname = "g"\ndesign = "grid"\n{model}[grid]\n{text}\n'
    spec_error_at(study, path, needle, expand=True)


def test_plan_counts_points_per_stage():
    text = (
        GRID.replace('"train.init" = ["default", "xavier_uniform"]\n', "")
        + """
[[exclude]]
"model.dropout" = 0.5
"train.schedule" = "cosine"

[[stage]]
name = "narrow"

[[stage]]
name = "wide"
model = { hidden = [128] }
"""
    )
    study = parse_study(text)
    assert study.excluded == 2 and len(study.stages) == 2 * (6 - 1)


def test_baseline_names_the_arm_reports_compare_with():
    named = "init=default dropout=0.5 schedule=cosine"
    study = parse_study(GRID.replace("seeds = [0, 1]", f'seeds = [0, 1]\nbaseline = "{named}"'))
    assert study.info.baseline == named and named in [stage.name for stage in study.stages]
    with pytest.raises(SpecError, match="is not a grid point's name") as info:
        parse_study(GRID.replace("seeds = [0, 1]", 'seeds = [0, 1]\nbaseline = "dropout=0.5"'), "bad.toml")
    assert info.value.path == "study.baseline"
    ladder = TINY_LADDER.replace('name = "t"', 'name = "t"\nbaseline = "mlp"')
    assert parse_study(ladder).info.baseline == "mlp"
    with pytest.raises(SpecError, match="did you mean 'mlp'"):
        parse_study(ladder.replace('baseline = "mlp"', 'baseline = "mpl"'))


TINY_LADDER = '[study]\nname = "t"\n[[stage]]\nname = "lin"\nmodel = "linear"\n[[stage]]\nname = "mlp"\nmodel = "mlp"\n'


def test_a_one_value_axis_is_a_fixed_setting():
    text = GRID.replace('"train.init" = ["default", "xavier_uniform"]', '"train.init" = ["xavier_uniform"]')
    trials = expand(parse_study(text))
    assert {t.settings.train.init for t in trials} == {"xavier_uniform"} and len(trials) == 2 * 3 * 2
