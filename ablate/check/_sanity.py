"""The sanity checks (see the package docstring): what each measures and the bar it must clear.

Budgets are counted in optimisation steps, not epochs, and are small so that a study's checks
take seconds to a minute or two per architecture on a CPU: 128 examples fitted within 2,000
steps (batches of at most 32, constant learning rate, no early stopping: a schedule that decays
to nothing or a stop on validation would test the schedule, not the pipeline; training ends as
soon as they are fitted); the label checks train for 1,000 steps on at most 5,000 examples and
test on at most 2,000. Steps, because a plain deep network escapes its initial plateau only
after a few hundred of them, however few examples it sees: system C's model 1 (seven convs, no
batch norm, SGD at 0.01) sits at chance for about 450 steps, then fits 128 examples by step 550
and reaches 93% on 5,000 examples by step 1,000 — it failed a budget of 3 epochs (235 steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ablate.spec import ConstantSchedule, TrialSettings

if TYPE_CHECKING:
    import torch

    from ablate.datasets import DeviceData
    from ablate.design import Trial

OVERFIT_EXAMPLES, OVERFIT_STEPS, OVERFIT_BATCH, OVERFIT_TARGET = 128, 2000, 32, 0.99
LABEL_EXAMPLES, LABEL_STEPS, LABEL_TEST = 5000, 1000, 2000
INITIAL_LOSS_TOLERANCE = 0.5  # |loss / ln(classes) - 1| at most this
# Shuffled labels: test accuracy at most this far from the most frequent class's share towards the real labels'
# accuracy. Not a fixed margin over chance: a briefly trained network is a smooth function over a few big regions of
# the input, each given a random class, so its accuracy on shuffled labels scatters well above chance (19% seen on
# MNIST) without any leak; a leak of the labels puts it near the real labels' accuracy.
SHUFFLED_SHARE = 0.5


class _Fitted(Exception):
    """The overfit check's examples are fitted: training stops there."""


def _epochs(steps: int, examples: int, batch_size: int) -> int:
    """Epochs of `examples` in batches of `batch_size` that make at least `steps` optimisation steps."""
    return max(1, math.ceil(steps / math.ceil(examples / batch_size)))


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None  # None: does not apply (the initial loss of a model not trained with cross-entropy)
    value: float
    bar: str  # what the value had to be, in words

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[self.passed]
        return f"{verdict}  {self.name}: {self.value:.4g} ({self.bar})"


@dataclass(frozen=True)
class StageChecks:
    """The checks of one architecture, run with the settings of its first stage (`stage`, seed `seed`)."""

    stage: str
    seed: int
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)


def architectures(trials: list[Trial]) -> list[Trial]:
    """One trial per distinct model (and dataset), the first that has it."""
    seen, firsts = set(), []
    for trial in trials:
        key = (trial.settings.dataset, repr(trial.settings.model))
        if key not in seen:
            seen.add(key)
            firsts.append(trial)
    return firsts


def check_study(trials: list[Trial], data_dir: Path, device: str = "cpu") -> list[StageChecks]:
    import torch

    from ablate import datasets

    results = []
    for trial in architectures(trials):
        settings = trial.settings
        data = datasets.load(settings.dataset, settings.data, data_dir, torch.device(device))
        results.append(StageChecks(trial.stage, trial.seed, check_trial(settings, data, torch.device(device))))
    return results


def check_trial(settings: TrialSettings, data: DeviceData, device: torch.device) -> tuple[Check, ...]:
    return (_initial_loss(settings, data, device), _overfit(settings, data, device),
            *_labels(settings, data, device))


def _initial_loss(settings: TrialSettings, data: DeviceData, device: torch.device) -> Check:
    """An untrained classifier spreads its probability over the classes: cross-entropy ≈ ln(classes). Far above
    means exploding initial logits (an initialisation or normalisation bug); far below, a leak of the labels."""
    import torch

    from ablate import datasets, models
    from ablate.engine import evaluate, make_loss

    dataset = datasets.get(settings.dataset)
    torch.manual_seed(settings.seed)
    model = models.build_model(settings.model, dataset)
    models.initialise(model, settings.train.init)
    loss, _ = evaluate(model.to(device), data.val, data, make_loss(settings.train.loss, dataset.classes))
    expected = math.log(dataset.classes)
    if settings.train.loss != "cross_entropy":
        return Check("initial loss", None, loss, "only a cross-entropy loss has an expected start, ln "
                                                 f"{dataset.classes}")
    passed = abs(loss / expected - 1) <= INITIAL_LOSS_TOLERANCE
    return Check("initial loss", passed, loss, f"near ln {dataset.classes} = {expected:.3f}, within "
                                               f"{INITIAL_LOSS_TOLERANCE:.0%}")


def _overfit(settings: TrialSettings, data: DeviceData, device: torch.device) -> Check:
    """A working model, loss and optimiser memorise a handful of examples; one that cannot is broken (a dead model,
    a learning rate of 0, an augmentation that destroys the signal). Its accuracy on them is measured in eval mode
    (the examples are also the validation split) after each epoch; training stops once they are fitted."""
    from ablate.datasets import Split
    from ablate.engine import Diverged, train_trial

    few = Split(data.train.images[:OVERFIT_EXAMPLES], data.train.labels[:OVERFIT_EXAMPLES])
    batch = min(settings.train.batch_size, OVERFIT_BATCH)
    train = replace(settings.train, epochs=_epochs(OVERFIT_STEPS, len(few), batch), batch_size=batch,
                    schedule=ConstantSchedule(), early_stopping=None)
    seen: list[float] = []

    def watch(epoch: int, metrics: dict[str, float]) -> None:
        seen.append(metrics["val_accuracy"])
        if seen[-1] >= OVERFIT_TARGET:
            raise _Fitted()

    try:
        train_trial(replace(settings, train=train), replace(data, train=few, val=few), device, watch, test=False)
    except Diverged:
        seen.append(float("nan"))
    except _Fitted:
        pass
    best = max(seen) if seen else float("nan")
    return Check(f"overfit {len(few)} examples", best >= OVERFIT_TARGET, best,
                 f"≥ {OVERFIT_TARGET:.0%} of them fitted within {OVERFIT_STEPS} steps")


def _labels(settings: TrialSettings, data: DeviceData, device: torch.device) -> tuple[Check, Check]:
    """Trained briefly on the real labels the model beats chance clearly; on shuffled labels it cannot (the test
    labels are real). Labels misaligned with their images fail the first; a leak of the test labels the second."""
    import torch

    from ablate import datasets
    from ablate.datasets import Split
    from ablate.engine import Diverged, train_trial

    classes = datasets.get(settings.dataset).classes
    chance = 1 / classes
    n = min(LABEL_EXAMPLES, len(data.train))
    images, labels = data.train.images[:n], data.train.labels[:n]
    shuffled = labels[torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed)).to(labels.device)]
    test = Split(data.test.images[:LABEL_TEST], data.test.labels[:LABEL_TEST])
    train = replace(settings.train, epochs=_epochs(LABEL_STEPS, n, settings.train.batch_size), early_stopping=None)
    accuracies = []
    for y in (labels, shuffled):
        subset = replace(data, train=Split(images, y), test=test)
        try:
            accuracies.append(train_trial(replace(settings, train=train), subset, device).test_accuracy)
        except Diverged:
            accuracies.append(float("nan"))
    learns = max(2 * chance, chance + 0.1)
    # A model that learnt nothing still gets the most frequent test class right (it learns the class frequencies).
    majority = float(torch.bincount(test.labels, minlength=classes).max()) / len(test)
    ceiling = majority + SHUFFLED_SHARE * max(0.0, accuracies[0] - majority)
    return (Check("real labels", accuracies[0] >= learns, accuracies[0],
                  f"test accuracy ≥ {learns:.0%} after {train.epochs} epoch(s), ≥ {LABEL_STEPS} steps, on {n} "
                  "examples; "
                  f"chance {chance:.0%}"),
            Check("shuffled labels", accuracies[1] <= ceiling, accuracies[1],
                  f"test accuracy ≤ {ceiling:.1%}, halfway from the most frequent test class's share {majority:.1%} "
                  "to the real labels' accuracy"))
