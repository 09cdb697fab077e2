"""The training step in its two forms (ablate.engine's _graph).

- The eager step, whose rates come from per-step tables instead of a scheduler stepped between batches, trains
  exactly as the scheduler-driven loop did, bit for bit, on the CPU: the loop below is the engine's loop before the
  change, kept here as the reference.
- The graph-safe step (what a CUDA graph captures) makes no host synchronisation, and run eagerly it trains as the
  eager step does, to float rounding.
- On CUDA (skipped without it), `graphs = "auto"` captures the step and trains as the eager step does.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from ablate import datasets, models
from ablate.engine import AUGMENT_SEED_OFFSET, augment_batch, make_loss, make_optimizer, make_schedule, train_trial
from ablate.engine._graph import EagerStep, GraphStep
from ablate.engine._layout import conv_layout, in_layout
from ablate.engine._optim import StepRates
from ablate.engine._train import _Epochs, _train_epoch
from ablate.errors import SpecError
from ablate.spec import (
    Augment,
    CNNModel,
    ConvBlock,
    CosineSchedule,
    DataSettings,
    MLPModel,
    OneCycleSchedule,
    StepSchedule,
    TrainSettings,
    TrialSettings,
    WarmupCosineSchedule,
    parse_study,
)
from tests.conftest import DATA_DIR

CPU = torch.device("cpu")
DATA = DataSettings(val_size=100, train_limit=250, test_limit=100)  # 250 = 3 batches of 64 and a short one of 58
# No batch norm here: a conv bias before batch norm has a zero gradient up to rounding, which Adam scales up to full
# steps of either sign, so two correct Adams part ways there (and only there).
CNN = CNNModel(batchnorm=False, dropout=0.2, head="gap", blocks=(
    ConvBlock(out=4), ConvBlock(out=6, pool=True), ConvBlock(out=10, activation="none", batchnorm=False, dropout=0.0)))

TRAINS = {
    "adam-onecycle-dropout-smoothing": (MLPModel(hidden=(32,), dropout=0.3), TrainSettings(
        epochs=2, batch_size=64, optimizer="adam", lr=3e-3, schedule=OneCycleSchedule(), label_smoothing=0.1)),
    "sgd-nesterov-step-clip-decay": (MLPModel(hidden=(32, 16), batchnorm=True), TrainSettings(
        epochs=3, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3,
        grad_clip=0.5, schedule=StepSchedule(step_size=1, gamma=0.5))),
    "adamw-warmup-cnn-augment": (CNN, TrainSettings(
        epochs=2, batch_size=64, optimizer="adamw", lr=2e-3, weight_decay=1e-2,
        schedule=WarmupCosineSchedule(warmup_epochs=1), augment=Augment(rotation=10.0, crop=2))),
    "sgd-plain-cosine-mse": (MLPModel(hidden=(16,)), TrainSettings(
        epochs=2, batch_size=64, optimizer="sgd", lr=2.0, loss="mse", schedule=CosineSchedule())),
}


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return datasets.load("mnist", DATA, DATA_DIR, CPU)


def _settings(name: str, seed: int = 3) -> TrialSettings:
    model, train = TRAINS[name]
    return TrialSettings("mnist", seed, DATA, _resolved(model), train)


def _resolved(model):
    """A CNN's settings with its block defaults filled in, as a study's are; other kinds as they are."""
    return model.resolved() if hasattr(model, "resolved") else model


def _model(settings: TrialSettings) -> nn.Module:
    """The trial's network as train_trial builds it: initial weights and dropout keyed by its seed, its layout."""
    torch.manual_seed(settings.seed)
    model = models.build_model(settings.model, datasets.get("mnist"))
    models.initialise(model, settings.train.init)
    models.seed_dropout(model, settings.seed)
    return model.to(CPU, memory_format=conv_layout(settings.model.kind, CPU))


def _scheduler_driven(settings: TrialSettings, data) -> tuple[nn.Module, list[float]]:
    """The engine's training loop as it was before the rate tables: torch's scheduler stepped after each batch
    (or epoch), the optimizer reading its own param_groups. The reference the tables must reproduce exactly."""
    train = settings.train
    model = _model(settings)
    layout = conv_layout(settings.model.kind, CPU)
    optimizer = make_optimizer(model, train)
    schedule = make_schedule(optimizer, train, math.ceil(len(data.train) / train.batch_size))
    loss_fn = make_loss(train.loss, 10, train.label_smoothing)
    order_generator = torch.Generator().manual_seed(settings.seed)
    augment_generator = torch.Generator().manual_seed(settings.seed + AUGMENT_SEED_OFFSET)
    losses = []
    for _ in range(train.epochs):
        model.train()
        order = torch.randperm(len(data.train), generator=order_generator)
        loss_sum = torch.zeros(())
        for start in range(0, len(data.train), train.batch_size):
            index = order[start : start + train.batch_size]
            images, labels = data.train.images[index], data.train.labels[index]
            if train.augment.active:
                images = augment_batch(images.float(), train.augment, augment_generator)
            logits = model(in_layout(data.normalise(images), layout))
            loss = loss_fn(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip, foreach=True)
            optimizer.step()
            schedule.after_batch()
            loss_sum += loss.detach() * labels.shape[0]
        schedule.after_epoch()
        losses.append(loss_sum.item() / len(data.train))
    return model, losses


@pytest.mark.parametrize("name", TRAINS)
def test_the_step_from_rate_tables_trains_as_the_scheduler_driven_loop_bit_for_bit(data, name):
    settings = _settings(name)
    reference, reference_losses = _scheduler_driven(settings, data)
    result = train_trial(settings, data, CPU, test=False)
    assert [m["train_loss"] for m in result.history] == reference_losses
    trained = result.model.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(trained[key], value), key


@pytest.mark.parametrize("name", TRAINS)
def test_the_rate_tables_are_what_the_scheduler_sets(name):
    """Every step's learning rate and momentum, as torch's scheduler leaves them on a real optimizer."""
    train = TRAINS[name][1]
    optimizer = make_optimizer(nn.Linear(2, 2), train)
    schedule = make_schedule(optimizer, train, 4)
    optimizer.step()  # no gradients, no change: only so that the scheduler does not warn
    rates = StepRates(train, 4)
    group = optimizer.param_groups[0]
    for _ in range(train.epochs):
        lrs, momenta = rates.epoch()
        for lr, momentum in zip(lrs, momenta):
            assert (lr, momentum) == (group["lr"], group["betas"][0] if "betas" in group else group["momentum"])
            schedule.after_batch()
        schedule.after_epoch()
    assert len(set(lrs)) > 1 or name == "sgd-nesterov-step-clip-decay"  # the schedules do move within an epoch


def _epochs(settings: TrialSettings, model: nn.Module, steps: int, graph_safe: bool) -> _Epochs:
    train = settings.train
    loss_fn = make_loss(train.loss, 10, train.label_smoothing)
    step = (GraphStep(model, train, loss_fn, CPU, steps, capture=False) if graph_safe
            else EagerStep(model, make_optimizer(model, train), loss_fn, train.grad_clip, CPU))
    return _Epochs(step=step, rates=StepRates(train, steps), augment=train.augment,
                   augment_generator=torch.Generator().manual_seed(settings.seed + AUGMENT_SEED_OFFSET),
                   layout=conv_layout(settings.model.kind, CPU))


def _trained(settings: TrialSettings, data, graph_safe: bool) -> tuple[nn.Module, list[float]]:
    model = _model(settings)
    steps = math.ceil(len(data.train) / settings.train.batch_size)
    epochs = _epochs(settings, model, steps, graph_safe)
    generator = torch.Generator().manual_seed(settings.seed)
    losses = [_train_epoch(epochs, data, settings.train.batch_size, generator, epochs.rates.epoch())[0]
              for _ in range(settings.train.epochs)]
    return model, losses


@pytest.mark.parametrize("name", TRAINS)
def test_the_graph_safe_step_run_eagerly_trains_as_the_eager_step_to_float_rounding(data, name):
    """Its Adam, AdamW and SGD (with the step count, rates and momenta read on the device) are torch's updates;
    a few steps in float32 agree to rounding (a wrong bias correction, momentum or decay is off by far more)."""
    settings = _settings(name)
    eager, eager_losses = _trained(settings, data, graph_safe=False)
    safe, safe_losses = _trained(settings, data, graph_safe=True)
    assert safe_losses == pytest.approx(eager_losses, rel=1e-4)
    moved = 0.0
    for (key, a), b in zip(eager.state_dict().items(), safe.state_dict().values()):
        if a.dtype.is_floating_point:
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=key)
            moved = max(moved, (a - _model(settings).state_dict()[key]).abs().max().item())
    assert moved > 10 * 1e-4  # it trained, well beyond the tolerance: agreeing weights are not untouched ones


class _Synced(RuntimeError):
    pass


@pytest.fixture
def no_host_sync(monkeypatch):
    """Every way Python code reads a tensor's value to the host raises: what a captured step may not do."""
    def refuse(*_args, **_kwargs):
        raise _Synced("a host synchronisation inside the step")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


@pytest.mark.parametrize("name", TRAINS)
def test_the_graph_safe_step_never_waits_for_the_device(data, name, request):
    settings = _settings(name)
    model = _model(settings).train()
    step = _epochs(settings, model, 4, graph_safe=True).step
    step.start_epoch(*StepRates(settings.train, 4).epoch())
    images = in_layout(data.normalise(data.train.images[:64]), conv_layout(settings.model.kind, CPU))
    labels = data.train.labels[:64]
    request.getfixturevalue("no_host_sync")
    for _ in range(2):
        step.body(images, labels)
    step.optimizer.zero_grad()
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.undo()
    assert int(step.position) == 2 and float(step.optimizer.count) == 2


def test_the_eager_step_does_synchronise_so_the_guard_bites(data, no_host_sync):
    """The guard above is not vacuous: today's eager step looks at its divergence flag on the CPU every step."""
    settings = _settings("sgd-plain-cosine-mse")
    model = _model(settings).train()
    step = EagerStep(model, make_optimizer(model, settings.train), make_loss("mse", 10), None, CPU)
    step.start_epoch([0.1], [0.0])
    with pytest.raises(_Synced):
        step(1, data.normalise(data.train.images[:8]), data.train.labels[:8])


def test_graphs_is_off_by_default_and_only_auto_or_off():
    base = '[study]\nname = "g"\n[model]\nkind = "linear"\n[[stage]]\nname = "a"\n'
    assert parse_study(base).execution.graphs == "off"
    assert parse_study(base + '[execution]\ngraphs = "auto"\n').execution.graphs == "auto"
    with pytest.raises(SpecError, match="execution.graphs"):
        parse_study(base + '[execution]\ngraphs = "on"\n')


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("name", ["sgd-nesterov-step-clip-decay", "adamw-warmup-cnn-augment"])
def test_on_cuda_the_captured_step_trains_as_the_eager_step(name, monkeypatch):
    device = torch.device("cuda")
    replays = []
    replay = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda graph: (replays.append(1), replay(graph)))
    gpu_data = datasets.load("mnist", DATA, DATA_DIR, device)
    model, train = TRAINS[name]
    settings = TrialSettings("mnist", 3, DATA, _resolved(replace(model, dropout=0.0)), replace(train, epochs=3))
    eager = train_trial(settings, gpu_data, device, graphs="off")
    captured = train_trial(settings, gpu_data, device, graphs="auto")
    assert len(replays) >= 3 * (len(gpu_data.train) // 64 - 3)  # every full batch after the warm-up replayed
    for a, b in zip(eager.history, captured.history):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
    assert abs(captured.test_accuracy - eager.test_accuracy) <= 0.02
