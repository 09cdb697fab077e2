"""The order tasks are handed to workers in: longest first.

Workers take the next task as they come free (a list schedule), so a long task handed out last runs alone
while the other workers idle: the makespan is then the time of everything else plus that task. Handing the
longest tasks out first (Graham's LPT rule) bounds the makespan by 4/3 of the best possible, and keeps a pack
— several trials' work in one task — from being the straggler that eats the time packing saved.

The cost is an estimate from the spec alone (torch-free, as `ablate plan` is): only the order matters, so a
common factor (the machine's speed) cancels out.
"""

from __future__ import annotations

from ablate import datasets, models
from ablate.design._pack import Pack
from ablate.design._trials import Trial

# A training image costs a forward and a backward pass (about 3 forward passes); a validation image one forward.
TRAIN_PASSES, VAL_PASSES = 3, 1


def trial_cost(trial: Trial) -> float:
    """A trial's estimated work, in multiply-accumulates: per image (the model's MACs, or its parameter count where
    the kind cannot count MACs — a custom model: a weight is used about once per image in a linear or MLP layer),
    times the images it passes through per epoch (training ones as three passes), times its epochs (the most it
    may run: early stopping ends some sooner, which no one knows beforehand)."""
    settings = trial.settings
    dataset = datasets.get(settings.dataset)
    per_image = models.macs(settings.model, dataset) or trial.params_count or 1
    train, val, _ = dataset.split_sizes(settings.data)
    return float(per_image) * (TRAIN_PASSES * train + VAL_PASSES * val) * settings.train.epochs


def task_cost(task: Trial | Pack) -> float:
    """A pack's cost is its trials' together: packing saves a share of it, about the same for any pack size, so
    the order stays right."""
    trials = task.trials if isinstance(task, Pack) else (task,)
    return sum(trial_cost(t) for t in trials)


def longest_first(tasks: list[Trial | Pack]) -> list[Trial | Pack]:
    """The tasks, most costly first; tasks of equal cost keep their order (a stable sort), so a study of equal
    trials still runs arm by arm, seed by seed."""
    costs = [task_cost(t) for t in tasks]
    return [tasks[i] for i in sorted(range(len(tasks)), key=lambda i: -costs[i])]
