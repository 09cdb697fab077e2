"""The cnn kind, MLP output activation, initialisations and optimisers (issue 3's model side)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ablate import datasets, models
from ablate.design import expand
from ablate.engine import make_optimizer
from ablate.errors import SpecError
from ablate.models import build_model, count_params, initialise
from ablate.spec import MLPModel, TrainSettings, load_study, parse_study
from tests._helpers import spec_error_at
from tests.conftest import REPO, hooked_macs

MNIST = datasets.get("mnist")

# System C's three CNNs and system N's TinyVGG (V2), as a study file writes them.
CNNS = """
[study]
name = "cnns"

[model]
kind = "cnn"

[[stage]]
name = "c1"
model = { head = "linear", blocks = [
  { out = 16 }, { out = 8 }, { out = 16, pool = true }, { out = 8 }, { out = 16, pool = true },
  { out = 8, padding = 1 }, { out = 10, padding = 1 } ] }

[[stage]]
name = "c2"
model = { batchnorm = true, dropout = 0.1, head = "gap", blocks = [
  { out = 16 }, { out = 8 }, { out = 16, pool = true }, { out = 8 }, { out = 16, pool = true },
  { out = 12, padding = 1 }, { out = 10, padding = 1, batchnorm = false, activation = "none", dropout = 0.0 } ] }

[[stage]]
name = "c3"
model = { batchnorm = true, head = "gap", blocks = [
  { out = 8 }, { out = 8, pool = true }, { out = 12 }, { out = 12, pool = true }, { out = 24, pool = true },
  { out = 10, padding = 1, batchnorm = false, activation = "none" } ] }

[[stage]]
name = "tinyvgg"
model = { head = "linear", blocks = [
  { out = 10, padding = 1 }, { out = 10, padding = 1, pool = true },
  { out = 10, padding = 1 }, { out = 10, padding = 1, pool = true } ] }
"""


def _trials(text: str = CNNS):
    return {t.stage: t for t in expand(parse_study(text))}


def test_reference_cnns_have_their_published_sizes():
    trials = _trials()
    assert trials["c1"].params_count == 7_616  # system C model 1, to the unit
    assert trials["c2"].params_count == 7_798
    assert trials["c3"].params_count == 7_762
    for name, trial in trials.items():
        model = build_model(trial.settings.model, MNIST)
        assert count_params(model) == trial.params_count, name
        assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_model_level_defaults_fold_into_blocks_and_hash_alike():
    explicit = CNNS.replace(
        'model = { batchnorm = true, head = "gap", blocks = [\n  { out = 8 }, { out = 8, pool = true }',
        'model = { head = "gap", blocks = [\n  { out = 8, batchnorm = true }, { out = 8, pool = true, batchnorm = true '
        '}',
    )
    explicit = explicit.replace(
        "{ out = 12 }, { out = 12, pool = true }, { out = 24, pool = true },\n  { out = 10, padding = 1, batchnorm = "
        "false",
        "{ out = 12, batchnorm = true }, { out = 12, pool = true, batchnorm = true }, { out = 24, pool = true, "
        "batchnorm = true },\n  { out = 10, padding = 1, batchnorm = false",
    )
    assert explicit != CNNS
    assert _trials(explicit)["c3"].hash == _trials()["c3"].hash
    blocks = _trials()["c3"].settings.model.blocks
    assert [b.batchnorm for b in blocks] == [True] * 5 + [False]


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ('{ head = "gap", blocks = [{ out = 12 }] }', "must have out = 10"),
        ("{ blocks = [{ out = 4, kernel = 29 }] }", "leaves no feature map"),
        ("{ blocks = [] }", "must not be empty"),
        ("{ blocks = [{ out = 4, pol = true }] }", "did you mean 'pool'"),
        ('{ blocks = [{ out = 4 }], head = "avg" }', "allowed: 'linear', 'gap', 'conv-gap'"),
    ],
)
def test_bad_cnns_are_rejected_with_their_path(model, needle):
    text = f'[study]\nname = "x"\n[[stage]]\nname = "a"\nmodel = {{ kind = "cnn", {model[2:]}\n'
    with pytest.raises(SpecError) as info:
        expand(parse_study(text, "bad.toml"))
    assert needle in str(info.value) and info.value.path.startswith("stage[1].model")


def test_conv_gap_head_and_block_layer_order():
    text = (
        '[study]\nname = "x"\n[[stage]]\nname = "a"\n'
        'model = { kind = "cnn", head = "conv-gap", blocks = [\n'
        '    { out = 6, batchnorm = true, dropout = 0.2, pool = true }] }\n'
    )
    trial = expand(parse_study(text))[0]
    model = build_model(trial.settings.model, MNIST)
    assert [type(m).__name__ for m in model] == [
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "Dropout",
        "MaxPool2d",
        "Conv2d",
        "AdaptiveAvgPool2d",
        "Flatten",
    ]
    assert count_params(model) == trial.params_count == (6 * 9 + 6) + 12 + (6 * 10 + 10)


def test_mlp_output_activation_is_system_n_v1():
    v1 = MLPModel(hidden=(10,), activation="relu", output_activation="relu")
    model = build_model(v1, MNIST)
    assert type(model[-1]).__name__ == "ReLU"
    assert (model(torch.randn(8, 1, 28, 28)) >= 0).all()
    assert models.params_count(v1, MNIST) == count_params(model) == 784 * 10 + 10 + 10 * 10 + 10


@pytest.mark.parametrize(
    ("scheme", "std"),
    [
        ("xavier_uniform", math.sqrt(2 / (784 + 256))),
        ("xavier_normal", math.sqrt(2 / (784 + 256))),
        ("kaiming_uniform", math.sqrt(2 / 784)),
        ("kaiming_normal", math.sqrt(2 / 784)),
        ("orthogonal", None),
    ],
)
def test_initialisations_have_their_statistics(scheme, std):
    torch.manual_seed(0)
    model = build_model(MLPModel(hidden=(256,)), MNIST)
    initialise(model, scheme)
    first = model[1]
    assert torch.count_nonzero(first.bias) == 0
    if std is None:  # orthogonal rows: W Wᵀ = I for the 256 × 784 weight
        assert torch.allclose(first.weight @ first.weight.T, torch.eye(256), atol=1e-4)
    else:
        assert first.weight.std().item() == pytest.approx(std, rel=0.03)
        assert abs(first.weight.mean().item()) < 0.01 * std * 10


def test_default_init_keeps_pytorch_biases():
    torch.manual_seed(0)
    model = build_model(MLPModel(hidden=(16,)), MNIST)
    initialise(model, "default")
    assert torch.count_nonzero(model[1].bias) > 0


def test_optimisers_and_their_contradictions():
    model = nn.Linear(3, 2)
    sgd = make_optimizer(model, TrainSettings(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert isinstance(make_optimizer(model, TrainSettings(optimizer="adamw", weight_decay=0.01)), torch.optim.AdamW)
    base = '[study]\nname = "x"\n[train]\n{}\n[[stage]]\nname = "a"\nmodel = {{ kind = "linear" }}\n'
    for train, path, needle in [
        ("momentum = 0.9", "train.momentum", "applies only to optimizer 'sgd'"),
        ('optimizer = "sgd"\nnesterov = true', "train.nesterov", "needs momentum > 0"),
        ('init = "xavier"', "train.init", "did you mean 'xavier_normal'"),
    ]:
        spec_error_at(base.format(train), path, needle)


def test_a_cnn_trains_with_sgd_and_an_init():
    from ablate.engine import train_trial
    from ablate.spec import DataSettings, TrialSettings
    from tests.conftest import DATA_DIR

    trial = _trials()["c3"]
    settings = TrialSettings(
        dataset="mnist",
        seed=0,
        data=DataSettings(val_size=500, train_limit=2000, test_limit=500),
        model=trial.settings.model,
        train=TrainSettings(epochs=2, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, init="kaiming_normal"),
    )
    data = datasets.load("mnist", settings.data, DATA_DIR, torch.device("cpu"))
    result = train_trial(settings, data, torch.device("cpu"))
    assert result.test_accuracy > 0.5 and result.params_count == 7_762


def test_macs_match_a_torch_hook_count():
    for trial in (
        expand(load_study(REPO / "studies" / "cnn8k.toml"))[::3]
        + expand(load_study(REPO / "studies" / "linearity.toml"))[::3]
    ):
        model = build_model(trial.settings.model, MNIST)
        assert models.macs(trial.settings.model, MNIST) == hooked_macs(model, MNIST.shape)
