"""Study files: what is accepted, and one clear message (exit code 2) for what is not."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ablate.cli import main
from ablate.errors import SpecError
from ablate.spec import LinearModel, MLPModel, load_study, parse_study, study_warnings
from tests._helpers import SEARCH_STUDY, spec_error_at
from tests.conftest import REPO, TINY_STUDY

GOOD = """
[study]
name = "s"
seeds = [0, 1, 2]

[train]
epochs = 3
lr = 1

[model]
kind = "mlp"
hidden = [64]

[[stage]]
name = "base"

[[stage]]
name = "wide"
model = { hidden = [128, 64], dropout = 0.25 }
train = { loss = "mse" }

[[stage]]
name = "lin"
model = { kind = "linear" }
"""


def test_good_study_resolves_defaults_and_overrides():
    study = parse_study(GOOD)
    base, wide, lin = study.stages
    assert study.info.seeds == (0, 1, 2)
    assert base.model == MLPModel(hidden=(64,))
    assert wide.model == MLPModel(hidden=(128, 64), dropout=0.25)
    assert wide.train.loss == "mse" and base.train.loss == "cross_entropy"
    assert base.train.lr == 1.0 and isinstance(base.train.lr, float)  # an int where a float goes is fine
    assert base.train.batch_size == 256  # schema default
    assert lin.model == LinearModel()  # another kind starts from scratch, not from [model]


def test_committed_linearity_study_is_valid():
    study = load_study(REPO / "studies" / "linearity.toml")
    assert [s.name for s in study.stages] == ["linear-mse", "linear-ce", "mlp", "mlp-dropout", "mlp-bn"]
    assert study.info.seeds == (0, 1, 2)
    assert [s.reference for s in study.stages] == [92.6, 92.1, 97.5, 97.3, 97.7]


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_study(text, "bad.toml")
    return info.value


BASE = TINY_STUDY


@pytest.mark.parametrize(
    ("old", "new", "path", "shown"),
    [
        ("hidden = [32]", "hiden = [32]", "stage[2].model.hiden", 'stage[2] ("mlp").model.hiden'),
        ('kind = "linear"', 'kind = "linaer"', "stage[1].model.kind", 'stage[1] ("linear").model.kind'),
        ('name = "mlp"', 'name = "mlp"\ndescripton = "x"', "stage[2].descripton", 'stage[2] ("mlp").descripton'),
        ('name = "mlp"', 'name = "mlp"\nreference = 101', "stage[2].reference", 'stage[2] ("mlp").reference'),
        ('model = { kind = "linear" }', "", "stage[1].model.kind", 'stage[1] ("linear").model.kind'),
        ("epochs = 2", "epochs = 0", "train.epochs", "train.epochs"),  # not in a stage: nothing to name
    ],
)
def test_errors_in_a_stage_name_it_and_keep_the_key_path(old, new, path, shown):
    error = spec_error_at(BASE.replace(old, new, 1), path)  # the key path as written, for tools
    assert str(error).startswith(f"bad.toml: {shown}: "), str(error)


def test_errors_in_a_grid_stage_name_it():
    text = (
        '[study]\nname = "g"\ndesign = "grid"\n[model]\nkind = "mlp"\n[grid]\n"model.dropout" = [0.0, 0.5]\n'
        '[[stage]]\nname = "narrow"\nmodel = { hidden = [8] }\n[[stage]]\nname = "wide"\nmodel = { hiden = [64] }\n'
    )
    error = spec_error_at(text, "stage[2].model.hiden")
    assert str(error).startswith('bad.toml: stage[2] ("wide").model.hiden: ')


SEARCH = SEARCH_STUDY


@pytest.mark.parametrize(
    ("trials", "sampler", "warned"),
    [(8, "tpe", True), (4, "tpe", True), (9, "tpe", False), (4, "random", True), (4, "qmc", True)],
)
def test_search_that_never_leaves_startup_trials_is_warned(trials, sampler, warned):
    assert "\ntrials = 40\n" in SEARCH and "startup_trials = 8" in SEARCH and 'pruner = "median"' in SEARCH
    text = SEARCH.replace("\ntrials = 40\n", f"\ntrials = {trials}\n").replace(
        'sampler = "tpe"', f'sampler = "{sampler}"'
    )
    warnings = study_warnings(parse_study(text, "s.toml"))
    assert bool(warnings) == warned, warnings
    if warned:
        assert warnings[0].startswith(f"s.toml: search.trials: {trials} ≤ search.startup_trials (8)")
        assert "median pruner never prunes" in warnings[0] and "raise search.trials above 8" in warnings[0]
        assert ("random search" in warnings[0]) == (sampler == "tpe")


def test_search_without_a_pruner_or_startup_is_not_warned():
    text = SEARCH.replace("\ntrials = 40\n", "\ntrials = 4\n").replace('pruner = "median"', 'pruner = "none"')
    assert study_warnings(parse_study(text.replace('sampler = "tpe"', 'sampler = "random"'), "s.toml")) == []
    assert study_warnings(parse_study(GOOD)) == []


def test_missing_study_table_and_stages():
    assert _error("[train]\nepochs = 1\n").path == "study"
    assert "at least one [[stage]]" in str(_error('[study]\nname = "x"\n'))
    assert "[[stage]]" in str(_error('[study]\nname = "x"\n[stage]\nname = "a"\n'))


def test_model_kind_is_required_somewhere():
    error = _error('[study]\nname = "x"\n[[stage]]\nname = "a"\n')
    assert error.path == "stage[1].model.kind" and "is required" in str(error)


def test_toml_syntax_error_has_file_line_and_column():
    error = _error('[study]\nname = "x"\nseeds = = [0, 1]\n')
    assert str(error) == "bad.toml:3:9: TOML syntax error: Invalid value"
    assert "TOML syntax error" in str(_error('[study]\nname = "x"\nseeds = [0, 1\n'))  # at end of document


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate", *args], capture_output=True, text=True, cwd=REPO)


def test_cli_bad_spec_exits_2_with_one_line_and_no_traceback(write_study):
    path = write_study(BASE.replace("hidden = [32]", "hiden = [32]"))
    for command in ("plan", "run"):
        done = _cli(command, str(path))
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert (
            f"{path}: stage[2] (\"mlp\").model.hiden: unknown key (did you mean 'hidden'?); model kind 'mlp' allows:"
            in done.stderr
        )


def test_cli_missing_file_and_debug_traceback(tmp_path):
    missing = tmp_path / "nope.toml"
    done = _cli("plan", str(missing))
    assert done.returncode == 2 and "no such study file" in done.stderr and "Traceback" not in done.stderr
    debug = _cli("--debug", "plan", str(missing))
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_run_with_bad_spec_touches_no_store(write_study, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # none yet
    path = write_study(BASE.replace("epochs = 2", "epochs = -1"))
    assert main(["run", str(path), "--tracking-uri", store]) == 2
    assert not (tmp_path / "mlflow.db").exists()
