"""The generic validator: a bad value anywhere in a study file is one SpecError at the user's own key path, saying
what is allowed — one table over ladder settings, the train table's contradictions and a search's space."""

from __future__ import annotations

import pytest

from tests._helpers import TINY_SEARCH, spec_error_at
from tests.conftest import TINY_STUDY


@pytest.mark.parametrize(
    ("base", "old", "new", "path", "needles"),
    [
        # settings of a ladder study, its stages and sections
        pytest.param(
            TINY_STUDY,
            "hidden = [32]",
            "hiden = [32]",
            "stage[2].model.hiden",
            ["unknown key", "did you mean 'hidden'"],
        ),
        pytest.param(TINY_STUDY, "epochs = 2", "epoch = 2", "train.epoch", ["did you mean 'epochs'"]),
        pytest.param(TINY_STUDY, "epochs = 2", 'epochs = "two"', "train.epochs", ["must be an integer", "'two'"]),
        pytest.param(TINY_STUDY, "epochs = 2", "epochs = 0", "train.epochs", ["must be ≥ 1"]),
        pytest.param(TINY_STUDY, "batch_size = 128", "batch_size = 1.5", "train.batch_size", ["must be an integer"]),
        pytest.param(
            TINY_STUDY,
            "epochs = 2",
            'epochs = 2\nloss = "cross_entropi"',
            "train.loss",
            ["did you mean 'cross_entropy'", "allowed:"],
        ),
        pytest.param(
            TINY_STUDY, "epochs = 2", 'epochs = 2\noptimizer = "adan"', "train.optimizer", ["did you mean 'adam'"]
        ),
        pytest.param(
            TINY_STUDY, 'kind = "linear"', 'kind = "linaer"', "stage[1].model.kind", ["did you mean 'linear'", "mlp"]
        ),
        pytest.param(TINY_STUDY, "hidden = [32]", "hidden = [32], dropout = 1.0", "stage[2].model.dropout", ["[0, 1)"]),
        pytest.param(TINY_STUDY, "hidden = [32]", "hidden = 32", "stage[2].model.hidden", ["a list of integers"]),
        pytest.param(
            TINY_STUDY, "hidden = [32]", "hidden = [32], batchnorm = 1", "stage[2].model.batchnorm", ["true or false"]
        ),
        pytest.param(
            TINY_STUDY,
            'model = { kind = "linear" }',
            'model = { kind = "linear", hidden = [3] }',
            "stage[1].model.hidden",
            ["applies only to model kind 'mlp' (model kind is 'linear')", "model kind 'linear' allows: kind"],
        ),
        pytest.param(TINY_STUDY, "seeds = [0, 1]", "seeds = [0, 0]", "study.seeds", ["must not repeat"]),
        pytest.param(TINY_STUDY, "seeds = [0, 1]", "seeds = []", "study.seeds", ["at least one seed"]),
        pytest.param(TINY_STUDY, 'name = "tiny"', 'name = "has space"', "study.name", ["letters, digits"]),
        pytest.param(TINY_STUDY, 'name = "mlp"', 'name = "linear"', "stage[2].name", ["already the name of stage[1]"]),
        pytest.param(TINY_STUDY, "val_size = 500", "val_size = 60000", "data.val_size", ["must be < 60000"]),
        pytest.param(TINY_STUDY, "[data]", "[dat]", "dat", ["unknown section", "did you mean 'data'"]),
        pytest.param(
            TINY_STUDY,
            "train_limit = 1000",
            "train_limit = 1000\nmystery = 1",
            "data.mystery",
            ["unknown key", "val_size"],
        ),
        # the train table's contradictions and bad values (a schedule, a loss, early stopping, augmentation)
        pytest.param(
            TINY_STUDY,
            "epochs = 2",
            "epochs = 4\n" + 'schedule = { kind = "cosine", gamma = 0.5 }',
            "train.schedule.gamma",
            ["applies only to schedule kinds 'step', 'multistep', 'exponential' (schedule kind is 'cosine')"],
        ),
        pytest.param(
            TINY_STUDY, "epochs = 2", "epochs = 4\n" + 'schedule = "step"', "train.schedule.step_size", ["is required"]
        ),
        pytest.param(
            TINY_STUDY,
            "epochs = 2",
            "epochs = 4\n" + 'schedule = "cosinus"',
            "train.schedule.kind",
            ["did you mean 'cosine'"],
        ),
        pytest.param(
            TINY_STUDY,
            "epochs = 2",
            "epochs = 4\n" + 'schedule = { kind = "multistep", milestones = [3, 2] }',
            "train.schedule.milestones",
            ["increasing order"],
        ),
        pytest.param(
            TINY_STUDY,
            "epochs = 2",
            "epochs = 4\n" + 'schedule = { kind = "warmup_cosine", warmup_epochs = 4 }',
            "train.schedule.warmup_epochs",
            ["must be < train.epochs (4)"],
        ),
        pytest.param(
            TINY_STUDY,
            "epochs = 2",
            "epochs = 4\n" + 'loss = "mse"\nlabel_smoothing = 0.1',
            "train.label_smoothing",
            ["applies only to loss 'cross_entropy'"],
        ),
        pytest.param(
            TINY_STUDY, "epochs = 2", "epochs = 4\n" + "label_smoothing = 1.0", "train.label_smoothing", ["[0, 1)"]
        ),
        pytest.param(TINY_STUDY, "epochs = 2", "epochs = 4\n" + "grad_clip = 0", "train.grad_clip", ["must be > 0"]),
        pytest.param(
            TINY_STUDY,
            "epochs = 2",
            "epochs = 4\n" + "early_stopping = { patience = 0 }",
            "train.early_stopping.patience",
            ["must be ≥ 1"],
        ),
        pytest.param(
            TINY_STUDY,
            "epochs = 2",
            "epochs = 4\n" + 'early_stopping = { metric = "test_accuracy" }',
            "train.early_stopping.metric",
            ["'val_accuracy'"],
        ),
        pytest.param(
            TINY_STUDY,
            "epochs = 2",
            "epochs = 4\n" + "augment = { rotation = -5 }",
            "train.augment.rotation",
            ["must be ≥ 0"],
        ),
        pytest.param(
            TINY_STUDY,
            "epochs = 2",
            "epochs = 4\n" + "augment = { scale = [1.2, 0.8] }",
            "train.augment.scale",
            ["0 < low ≤ high"],
        ),
        pytest.param(
            TINY_STUDY,
            "epochs = 2",
            "epochs = 4\n" + "augment = { rotate = 5 }",
            "train.augment.rotate",
            ["did you mean 'rotation'"],
        ),
        # a search's space
        pytest.param(
            TINY_SEARCH,
            "low = 1e-6, high = 1.0",
            "low = 1.0, high = 1e-6",
            'search.space."train.lr"',
            ["low must be < high"],
        ),
        pytest.param(
            TINY_SEARCH,
            "low = 1e-6, high = 1.0",
            "low = 0.0, high = 1.0",
            'search.space."train.lr".low',
            ["> 0 on a log scale"],
        ),
        pytest.param(
            TINY_SEARCH,
            'when = { "train.schedule"',
            'when = { "train.schedul"',
            'search.space."train.schedule.gamma".when."train.schedul"',
            ["did you mean 'train.schedule'"],
        ),
        pytest.param(
            TINY_SEARCH,
            '"model.dropout" = { low',
            '"model.dropuot" = { low',
            'search.space."model.dropuot"',
            ["not a setting"],
        ),
        pytest.param(
            TINY_SEARCH,
            '"model.dropout" = { low = 0.0, high = 0.5 }',
            '"model.activation" = { low = 0, high = 1 }',
            'search.space."model.activation"',
            ["a range needs a numeric setting"],
        ),
        pytest.param(
            TINY_SEARCH,
            '"model.dropout" = { low = 0.0, high = 0.5 }',
            '"model.dropout" = { low = 0.0, high = 1.5 }',
            'search.space."model.dropout"',
            ["[0, 1)"],
        ),
        pytest.param(
            TINY_SEARCH,
            '"model.dropout" = { low = 0.0, high = 0.5 }',
            '"train.momentum" = { low = 0.0, high = 0.9 }',
            'search.space."train.momentum"',
            ["has no effect on the settings"],
        ),
        pytest.param(TINY_SEARCH, "trials = 4", "", "search.trials", ["is required (or search.timeout)"]),
        pytest.param(TINY_SEARCH, "startup_trials = 2", 'sampler = "tpee"', "search.sampler", ["did you mean 'tpe'"]),
    ],
)
def test_a_bad_value_is_one_spec_error_at_its_key_path(base, old, new, path, needles):
    text = base.format(trials=4) if base is TINY_SEARCH else base
    assert old in text
    spec_error_at(text.replace(old, new, 1), path, *needles)
