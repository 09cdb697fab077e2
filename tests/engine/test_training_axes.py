"""Schedules, label smoothing, gradient clipping, early stopping, augmentation and custom models."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
import torch

from ablate import datasets, models
from ablate.design import expand
from ablate.engine import augment_batch, make_loss, make_optimizer, make_schedule, train_trial
from ablate.errors import SpecError
from ablate.spec import Augment, parse_study
from tests._helpers import spec_error_at
from tests.conftest import DATA_DIR

CPU = torch.device("cpu")

SMALL = """
[study]
name = "axes"

[data]
val_size = 500
train_limit = 1024
test_limit = 500

[train]
batch_size = 128
{train}

[[stage]]
name = "only"
model = {model}
"""


def _settings(train: str = "", model: str = '{ kind = "mlp", hidden = [32] }'):
    if not re.search(r"^epochs", train, re.MULTILINE):
        train += "\nepochs = 4"
    return expand(parse_study(SMALL.format(train=train, model=model)))[0].settings


def _train(settings):
    data = datasets.load(settings.dataset, settings.data, DATA_DIR, CPU)
    return train_trial(settings, data, CPU)


def _lrs(train: str, epochs: int = 4, steps: int = 8) -> list[float]:
    """The learning rate before every step of a run, from the schedule alone."""
    settings = _settings(train)
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, settings.train)
    schedule = make_schedule(optimizer, settings.train, steps)
    rates = []
    for _ in range(epochs):
        for _ in range(steps):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.after_batch()
        schedule.after_epoch()
    return rates


def test_constant_and_epoch_schedules():
    assert set(_lrs("lr = 0.1")) == {0.1}
    step = _lrs('lr = 0.1\nschedule = { kind = "step", step_size = 2, gamma = 0.5 }')
    assert step[0] == step[15] == 0.1 and step[16] == step[31] == pytest.approx(0.05)  # decays after epoch 2, per epoch
    multi = _lrs('lr = 1.0\nschedule = { kind = "multistep", milestones = [1, 3], gamma = 0.1 }')
    assert [multi[8 * e] for e in range(4)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    expo = _lrs('lr = 1.0\nschedule = { kind = "exponential", gamma = 0.5 }')
    assert [expo[8 * e] for e in range(4)] == pytest.approx([1.0, 0.5, 0.25, 0.125])


def test_batch_schedules_anneal_within_epochs():
    cosine = _lrs('lr = 0.1\nschedule = { kind = "cosine", min_lr = 0.001 }')
    assert cosine[0] == 0.1 and cosine[1] < 0.1  # stepped per batch
    assert all(a >= b for a, b in zip(cosine, cosine[1:])) and cosine[-1] == pytest.approx(0.001, abs=1e-3)
    onecycle = _lrs('lr = 0.1\nschedule = { kind = "onecycle", pct_start = 0.25 }')
    assert onecycle[0] == pytest.approx(0.1 / 25)
    assert max(onecycle) == pytest.approx(0.1, rel=1e-3) and onecycle.index(max(onecycle)) in range(7, 9)
    assert onecycle[-1] < 1e-4
    warm = _lrs('lr = 0.1\nschedule = { kind = "warmup_cosine", warmup_epochs = 1.0 }')
    assert warm[0] == pytest.approx(0.1 / 8) and warm[7] == pytest.approx(0.1)  # linear warm-up over 8 steps
    assert all(a >= b for a, b in zip(warm[8:], warm[9:])) and warm[-1] < 0.002


def test_schedule_shows_in_logged_lr():
    result = _train(_settings('lr = 0.01\nschedule = { kind = "step", step_size = 1, gamma = 0.1 }'))
    assert [m["lr"] for m in result.history] == pytest.approx([0.01, 0.001, 1e-4, 1e-5])


def test_label_smoothing_raises_the_training_loss_not_the_evaluation_loss():
    logits = torch.tensor([[10.0, 0.0, 0.0]])
    target = torch.tensor([0])
    assert make_loss("cross_entropy", 3, 0.2)(logits, target) > make_loss("cross_entropy", 3)(logits, target) + 0.1
    plain, smoothed = _train(_settings()), _train(_settings("label_smoothing = 0.2"))
    assert smoothed.history[-1]["train_loss"] > plain.history[-1]["train_loss"] + 0.2
    assert smoothed.history[-1]["val_loss"] < smoothed.history[-1]["train_loss"]  # evaluation is unsmoothed


def test_gradient_clipping_bounds_each_update():
    """With plain SGD an update is lr × gradient, so a clipped update is at most lr × clip long."""
    settings = _settings('optimizer = "sgd"\nlr = 1.0\nepochs = 1\ngrad_clip = 0.01')
    settings = replace(settings, data=replace(settings.data, train_limit=128))
    torch.manual_seed(0)
    before = _weights_after(settings, epochs=0)
    after = _weights_after(settings, epochs=1)  # 128 examples, batch 128: exactly one step
    assert 0 < (after - before).norm() <= 0.01 + 1e-6
    unclipped = _weights_after(replace(settings, train=replace(settings.train, grad_clip=None)), epochs=1)
    assert (unclipped - before).norm() > 0.05


def _weights_after(settings, epochs: int) -> torch.Tensor:
    from ablate.engine import _train as engine  # where train_trial looks evaluate up

    captured = {}
    original = engine.evaluate

    def capture(model, *args, **kwargs):
        captured["w"] = torch.cat([p.detach().flatten() for p in model.parameters()])
        return original(model, *args, **kwargs)

    if epochs == 0:
        torch.manual_seed(settings.seed)
        model = models.build_model(settings.model, datasets.get("mnist"))
        return torch.cat([p.detach().flatten() for p in model.parameters()])
    engine.evaluate = capture
    try:
        _train(replace(settings, train=replace(settings.train, epochs=epochs)))
    finally:
        engine.evaluate = original
    return captured["w"]


def test_early_stopping_stops_and_restores_the_best_epoch():
    # min_delta 1.0 on accuracy: nothing after the first epoch counts as an improvement.
    rule = 'epochs = 10\nearly_stopping = { metric = "val_accuracy", patience = 2, min_delta = 1.0 }'
    stopped = _train(_settings(rule))
    assert len(stopped.history) == 3 and stopped.stopped_early and stopped.tested_epoch == 1
    one_epoch = _train(_settings("epochs = 1"))
    assert stopped.test_accuracy == one_epoch.test_accuracy  # the epoch-1 weights were restored before testing
    kept_last = _train(_settings(rule.replace("min_delta = 1.0", "min_delta = 1.0, restore_best = false")))
    assert kept_last.tested_epoch == 3 and kept_last.test_accuracy != one_epoch.test_accuracy
    patient = _train(_settings("epochs = 3\nearly_stopping = { patience = 5 }"))
    assert len(patient.history) == 3 and not patient.stopped_early


def test_augmentation_is_per_image_and_off_means_identity():
    images = torch.zeros(8, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 255.0  # the same bar in every image
    generator = torch.Generator().manual_seed(0)
    identity = augment_batch(images, Augment(), generator)
    assert torch.allclose(identity, images, atol=1e-3)
    rotated = augment_batch(images, Augment(rotation=30.0), generator)
    assert not torch.allclose(rotated[0], rotated[1])  # a different transform per image
    assert rotated.sum(dim=(1, 2, 3)) == pytest.approx(images.sum(dim=(1, 2, 3)), rel=0.05)  # moved, not lost
    shifted = augment_batch(images, Augment(translate=0.2), generator)
    columns = torch.arange(28.0)
    centre = (shifted.sum(dim=(1, 2)) * columns).sum(dim=1) / shifted.sum(dim=(1, 2, 3))
    assert centre.std() > 0.5  # the bar lands in different places
    assert (centre - 14).abs().max() <= 0.2 * 28 + 1


def test_augmented_training_runs_and_differs():
    plain = _train(_settings())
    augmented = _train(_settings("augment = { rotation = 10, translate = 0.1, scale = [0.9, 1.1] }"))
    # Moved, turned and zoomed images are harder to fit: a real gap in the first epoch's loss, not float noise.
    assert augmented.history[0]["train_loss"] > plain.history[0]["train_loss"] + 0.05
    assert augmented.test_accuracy > 0.5


def test_custom_model_factory_gets_its_keyword_arguments():
    model = '{ kind = "custom", factory = "tests.custom_models:tiny_net", width = 8, depth = 2 }'
    trial = expand(parse_study(SMALL.format(train="", model=model)))[0]
    assert trial.params_count == 784 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10  # counted before training
    assert trial.settings.model.kwargs == {"width": 8, "depth": 2}
    assert "custom tests.custom_models:tiny_net(width=8, depth=2)" == trial.architecture
    result = _train(trial.settings)
    assert (
        result.params_count == trial.params_count and result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    )


@pytest.mark.parametrize(
    ("factory", "needle"),
    [
        ("tests.no_such_module:f", "ModuleNotFoundError"),
        ("tests.custom_models:missing", "has no function 'missing'"),
        ("tests.custom_models:not_a_module", "not a torch.nn.Module"),
        ("tests.custom_models:wrong_output", "must give (N, 10) class scores"),
    ],
)
def test_bad_custom_factory_is_a_spec_error(factory, needle):
    model = f'{{ kind = "custom", factory = "{factory}" }}'
    spec_error_at(SMALL.format(train="", model=model), "stage[1].model.factory", needle, expand=True)


def test_factory_reference_format_is_checked_at_validation():
    with pytest.raises(SpecError, match="must be 'package.module:function'"):
        parse_study(SMALL.format(train="", model='{ kind = "custom", factory = "tests.custom_models.tiny_net" }'))


def test_stage_schedule_of_another_kind_replaces_the_default():
    text = SMALL.format(train='schedule = { kind = "step", step_size = 2 }', model='{ kind = "mlp" }')
    text += '\n[[stage]]\nname = "cos"\nmodel = { kind = "mlp" }\ntrain = { schedule = "cosine" }\n'
    text += '\n[[stage]]\nname = "step3"\nmodel = { kind = "mlp" }\ntrain = { schedule = { step_size = 3 } }\n'
    step, cosine, step3 = parse_study(text).stages
    assert step.train.schedule.kind == "step" and cosine.train.schedule.kind == "cosine"
    assert (step3.train.schedule.kind, step3.train.schedule.step_size) == ("step", 3)  # same kind: merged
    assert math.isclose(step3.train.schedule.gamma, 0.1)


def test_cli_imports_a_factory_beside_the_study(tmp_path, monkeypatch, capsys):
    """`ablate plan` run from another folder finds my_models.py beside the study. In this process (a new interpreter
    spends seconds importing torch), with the import path and the imported module put back afterwards."""
    import sys

    from ablate.cli import main
    from tests.conftest import REPO

    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n\ndef wide(width=4):\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), "
        "nn.Linear(width, 10))\n"
    )
    study = tmp_path / "custom.toml"
    study.write_text(SMALL.format(train="", model='{ kind = "custom", factory = "my_models:wide", width = 5 }'))
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        assert main(["plan", str(study)]) == 0
    finally:
        sys.modules.pop("my_models", None)
    assert f"{784 * 5 + 5 + 5 * 10 + 10:,}" in capsys.readouterr().out


def test_more_contradictions():
    for train, path, needle in [
        ('lr = 0.001\nschedule = { kind = "cosine", min_lr = 0.5 }', "train.schedule.min_lr", "must be ≤ train.lr"),
    ]:
        spec_error_at(SMALL.format(train=train, model='{ kind = "mlp" }'), path, needle)
    twice = '{ kind = "custom", factory = "tests.custom_models:tiny_net", width = 8, kwargs = { width = 9 } }'
    with pytest.raises(SpecError, match="is given twice"):
        parse_study(SMALL.format(train="", model=twice))
    dated = '{ kind = "custom", factory = "tests.custom_models:tiny_net", width = 1979-05-27 }'
    with pytest.raises(SpecError, match="must be a string, number"):
        parse_study(SMALL.format(train="", model=dated))


def test_onecycle_leaves_plain_sgd_plain():
    settings = _settings('optimizer = "sgd"\nschedule = "onecycle"')
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, settings.train)
    make_schedule(optimizer, settings.train, 4)
    assert optimizer.param_groups[0]["momentum"] == 0.0
