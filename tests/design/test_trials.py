"""Expansion into trials and the hash identity of a trial."""

from __future__ import annotations

import pytest

from ablate.design import expand, settings_hash, varying_settings
from ablate.errors import SpecError
from ablate.spec import parse_study
from tests.conftest import TINY_STUDY


def test_ladder_is_stages_times_seeds_in_order():
    trials = expand(parse_study(TINY_STUDY))
    assert [(t.stage, t.seed) for t in trials] == [("linear", 0), ("linear", 1), ("mlp", 0), ("mlp", 1)]
    assert len({t.hash for t in trials}) == 4
    assert trials[0].changes == "baseline"
    assert trials[2].changes == "model=mlp 784 → 32 (ReLU) → 10"


def test_hash_ignores_key_order_and_stage_name_and_explicit_defaults():
    reordered = TINY_STUDY.replace('model = { kind = "mlp", hidden = [32] }', 'model = { hidden = [32], kind = "mlp" }')
    renamed = TINY_STUDY.replace('name = "mlp"', 'name = "renamed"')
    explicit = TINY_STUDY.replace("hidden = [32] }", 'hidden = [32], dropout = 0.0, activation = "relu" }')
    moved = (
        TINY_STUDY.replace("epochs = 2\n", "")
        .replace(
            'model = { kind = "mlp", hidden = [32] }', 'model = { kind = "mlp", hidden = [32] }\ntrain = { epochs = 2 }'
        )
        .replace('model = { kind = "linear" }', 'model = { kind = "linear" }\ntrain = { epochs = 2 }')
    )
    hashes = [t.hash for t in expand(parse_study(TINY_STUDY))]
    for variant in (reordered, renamed, explicit, moved):
        assert [t.hash for t in expand(parse_study(variant))] == hashes


def test_hash_changes_with_any_setting_or_seed():
    base = expand(parse_study(TINY_STUDY))[2]
    for old, new in [
        ("hidden = [32]", "hidden = [33]"),
        ("epochs = 2", "epochs = 3"),
        ("val_size = 500", "val_size = 501"),
    ]:
        other = expand(parse_study(TINY_STUDY.replace(old, new)))[2]
        assert other.hash != base.hash
    assert expand(parse_study(TINY_STUDY))[3].hash != base.hash  # seed 1


def test_hash_is_stable_across_versions():
    """The identity of finished work: changing it silently re-runs every stored study."""
    trial = expand(parse_study(TINY_STUDY))[0]
    assert settings_hash(trial.settings) == trial.hash == "91744b1bcf0d"


def test_identical_stages_are_rejected():
    twin = TINY_STUDY + '\n[[stage]]\nname = "again"\nmodel = { kind = "linear" }\n'
    with pytest.raises(SpecError, match="stage\\[3\\]: resolves to the same settings as 'linear'"):
        expand(parse_study(twin))


def test_varying_settings_name_what_differs():
    assert varying_settings(expand(parse_study(TINY_STUDY))) == [
        "model.activation",
        "model.batchnorm",
        "model.dropout",
        "model.hidden",
        "model.kind",
    ]


def test_params_flatten_every_setting():
    params = expand(parse_study(TINY_STUDY))[2].params()
    assert params["model.hidden"] == "[32]"
    assert params["train.lr"] == "0.001"
    assert params["model.batchnorm"] == "false"
    assert params["data.train_limit"] == "1000"
    assert params["seed"] == "0"
