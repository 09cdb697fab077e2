"""Which trials can train packed together ([execution] pack), and the packs they make."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace

from ablate import models
from ablate.design._identity import identity
from ablate.design._trials import Trial
from ablate.spec import ConstantSchedule, TrialSettings

# What may differ between trials packed into one network ([execution] pack): the numbers a stacked network
# can carry per trial. Everything else — architecture, data, epochs, batch size, optimizer kind, loss,
# augmentation — must be equal, which pack_key checks by blanking these and comparing what is left.
PACKABLE_TRAIN = {"lr": 1.0, "weight_decay": 0.0, "momentum": 0.0, "init": "default", "schedule": ConstantSchedule(),
                  "label_smoothing": 0.0, "grad_clip": None, "early_stopping": None}


def pack_key(settings: TrialSettings) -> str | None:
    """Trials with equal keys can train packed together; None: this trial trains alone (a custom model)."""
    model = models.pack_blank(settings.model)
    if model is None:
        return None  # a kind whose layers ablate cannot stack (a custom model)
    blanked = replace(settings, seed=0, model=model, train=replace(settings.train, **PACKABLE_TRAIN))
    return json.dumps(identity(blanked), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Pack:
    """Trials trained together as one batched network; each is still its own run."""

    trials: tuple[Trial, ...]

    @property
    def key(self) -> str:
        return "pack:" + "+".join(t.hash for t in self.trials)


def pack_trials(trials: list[Trial], size: int | Callable[[list[Trial]], int]) -> list[Trial | Pack]:
    """Group trials that can share a network into packs of up to `size` (or, a function, the size it gives each
    group of trials that could share one), keeping the trials' order; a trial with no partner stays a plain trial."""
    if isinstance(size, int) and size <= 1:
        return list(trials)
    groups: dict[str | None, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(pack_key(trial.settings) or trial.hash, []).append(trial)
    tasks: list[Trial | Pack] = []
    for group in groups.values():
        k = (size(group) if len(group) > 1 else 1) if callable(size) else size
        for start in range(0, len(group), k):
            chunk = group[start : start + k]
            tasks.append(chunk[0] if len(chunk) == 1 else Pack(tuple(chunk)))
    return tasks
