"""The schema: every table a study file may hold, as frozen dataclasses written with ablate.fields.

Their fields name the allowed keys, their type hints the allowed types, their defaults the
defaults and their metadata the extra checks and the documentation (``ablate schema``
prints it). The model tables come from the model kinds' registry (ablate.models), the
dataset names from the dataset registry (ablate.datasets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ablate import datasets
from ablate.datasets import DataSettings
from ablate.fields import above, at_least, factory_reference, fraction_below_one, identifier, option, unique_ints
from ablate.models import ModelSpec

if TYPE_CHECKING:
    from ablate.spec._arms import ArmSource
    from ablate.spec._space import SearchSpec
    from ablate.spec._validate import Layer


@dataclass(frozen=True, kw_only=True)
class DatasetFactory:
    """Your own data: every key besides `factory` is passed to the factory as a keyword argument."""

    factory: str = option(
        doc="`package.module:function` returning train and test images and labels (see the README's \"Your own "
        "data\"); importable from the current directory or the study file's folder.",
        check=factory_reference,
    )
    kwargs: dict = option({}, "Keyword arguments of the factory; any other key of the table lands here.")

    EXTRA_KEYS = "kwargs"  # where validation puts keys the schema does not name


def _seed_budget(v) -> str | None:
    return "must be at least 2: a paired comparison needs two seeds to judge its spread" if v < 2 else None


@dataclass(frozen=True, kw_only=True)
class AdaptiveSeeds:
    """Seeds that stop when the answer is known: every arm runs `min` seeds; then, round by round, each arm whose
    comparison with the baseline is still undecided gets one more seed (and the baseline with it), up to `max`."""

    min: int = option(3, "Seeds every arm runs before any verdict is read.", _seed_budget)
    max: int = option(doc="The most seeds an arm may get.", check=_seed_budget)
    first: int = option(0, "The first seed; an arm's seeds are first, first + 1, … in this order.", at_least(0))

    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.first, self.first + self.max))


@dataclass(frozen=True)
class StudyInfo:
    name: str = option(doc="Study name (at most 120 characters); also the MLflow experiment name.", check=identifier)
    # The registry is read whenever the schema is (get_type_hints evaluates this), so a dataset registered later counts.
    dataset: Literal[datasets.names()] | DatasetFactory = option(
        datasets.DEFAULT,
        "Dataset every trial trains on: a built-in's name, or `{ factory = \"pkg.module:function\", ... }` for your "
        "own (its arguments, and a fingerprint of the data it returns, are part of every trial's identity).",
    )
    design: Literal["ladder", "grid", "ablation", "search"] = option(
        "ladder",
        "How the study becomes trials. `ladder`: the `[[stage]]`s in order, each compared with the first; "
        "`grid`: every combination of the `[grid]` axes (× the stages, if any); `ablation`: the top-level "
        "settings as the baseline plus each `[[arm]]`, an arm changing one or more of them; `search`: an Optuna "
        "search over `[search.space]`, its best configurations re-trained on fresh seeds.",
    )
    seeds: tuple[int, ...] | AdaptiveSeeds = option(
        (0,),
        "Seeds every arm runs with (the same in every arm, so comparisons pair); or adaptive seeds, e.g. `{ min = 3, "
        "max = 10 }`: every arm runs `min` seeds, then each arm whose verdict against the baseline is still undecided "
        "gets one more seed per round, up to `max` (`ladder`, `ablation` and `grid`; see `[stats]`).",
        lambda v: unique_ints(v) if isinstance(v, tuple) else None,
    )
    baseline: str | None = option(
        None,
        "The arm every other is compared with in reports: `ladder`, a stage's name (unset: the first); `ablation`, "
        "the name the top-level settings go by (unset: `baseline`); `grid`, a point's name as `ablate plan` shows it "
        "(unset: the first point).",
    )
    description: str = option("", "Free text shown in reports.")
    max_points: int = option(
        10_000,
        "`grid` only: the most arms the grid may expand into — the product of its axes' lengths, times the stages "
        "it crosses, counted before `[[exclude]]` — so that an axis of thousands of values is refused at once "
        "rather than expanded for minutes. Raise it to run a bigger grid.",
        at_least(1),
    )


def increasing(v: tuple) -> str | None:
    if not v:
        return "must list at least one epoch"
    ok = all(a < b for a, b in zip(v, v[1:])) and v[0] >= 1
    return None if ok else "must be epochs ≥ 1 in increasing order"


def scale_range(v: tuple) -> str | None:
    if len(v) != 2:
        return "must be two numbers [low, high]"
    return None if 0 < v[0] <= v[1] else "must be [low, high] with 0 < low ≤ high"


@dataclass(frozen=True)
class ConstantSchedule:
    kind: Literal["constant"] = option("constant", "The learning rate stays at `train.lr`.")


@dataclass(frozen=True, kw_only=True)
class StepSchedule:
    kind: Literal["step"] = option("step", "StepLR: multiply the rate by `gamma` every `step_size` epochs (stepped per "
                                           "epoch).")
    step_size: int = option(doc="Epochs between decays.", check=at_least(1))
    gamma: float = option(0.1, "Decay factor.", above(0.0))


@dataclass(frozen=True, kw_only=True)
class MultiStepSchedule:
    kind: Literal["multistep"] = option("multistep", "MultiStepLR: multiply the rate by `gamma` at each milestone "
                                                     "epoch.")
    milestones: tuple[int, ...] = option(doc="Epochs after which the rate decays, increasing.", check=increasing)
    gamma: float = option(0.1, "Decay factor.", above(0.0))


@dataclass(frozen=True, kw_only=True)
class ExponentialSchedule:
    kind: Literal["exponential"] = option("exponential", "ExponentialLR: multiply the rate by `gamma` after every "
                                                         "epoch.")
    gamma: float = option(doc="Decay factor per epoch.", check=above(0.0))


@dataclass(frozen=True)
class CosineSchedule:
    kind: Literal["cosine"] = option("cosine", "CosineAnnealingLR from `train.lr` to `min_lr` over the whole run, "
                                               "stepped per batch.")
    min_lr: float = option(0.0, "Rate at the end of training.", at_least(0.0))


@dataclass(frozen=True)
class OneCycleSchedule:
    kind: Literal["onecycle"] = option(
        "onecycle",
        "OneCycleLR peaking at `train.lr`, stepped per batch; as in torch, SGD's momentum (unless 0) or Adam's beta1 "
        "cycles between 0.85 and 0.95.",
    )
    pct_start: float = option(0.3, "Fraction of the steps spent increasing the rate.", fraction_below_one)
    div_factor: float = option(25.0, "Initial rate = `train.lr` / div_factor.", above(0.0))
    final_div_factor: float = option(1e4, "Final rate = initial rate / final_div_factor.", above(0.0))


@dataclass(frozen=True)
class WarmupCosineSchedule:
    kind: Literal["warmup_cosine"] = option(
        "warmup_cosine", "Linear warm-up from 0 to `train.lr`, then cosine decay to `min_lr`, stepped per batch."
    )
    warmup_epochs: float = option(1.0, "Length of the warm-up, in epochs (fractions allowed).", above(0.0))
    min_lr: float = option(0.0, "Rate at the end of training.", at_least(0.0))


SCHEDULE_KINDS: dict[str, type] = {
    cls.kind: cls
    for cls in (ConstantSchedule, StepSchedule, MultiStepSchedule, ExponentialSchedule, CosineSchedule,
                OneCycleSchedule, WarmupCosineSchedule)
}
ScheduleSpec = (
    ConstantSchedule | StepSchedule | MultiStepSchedule | ExponentialSchedule | CosineSchedule | OneCycleSchedule
    | WarmupCosineSchedule
)


@dataclass(frozen=True)
class EarlyStopping:
    metric: Literal["val_loss", "val_accuracy"] = option("val_loss", "Validation metric watched after every epoch.")
    patience: int = option(5, "Epochs without improvement before training stops.", at_least(1))
    min_delta: float = option(
        0.0, "Smallest change that counts as an improvement (accuracy as a fraction).", at_least(0.0)
    )
    restore_best: bool = option(True, "Test (and report) the weights of the best epoch, not the last.")


@dataclass(frozen=True)
class Augment:
    rotation: float = option(0.0, "Random rotation in ± degrees; 0 turns it off.", at_least(0.0))
    translate: float = option(
        0.0, "Random shift of up to this fraction of the width and height; 0: off.", fraction_below_one
    )
    scale: tuple[float, ...] = option(
        (1.0, 1.0), "Random zoom factor drawn from [low, high]; [1, 1]: off.", scale_range
    )
    crop: int = option(
        0, "Pad each image with this many black pixels on every side and take a random window of its size "
        "(torchvision's RandomCrop(size, padding=crop)); 0: off.", at_least(0),
    )
    flip: bool = option(False, "Mirror a random half of the images left to right (RandomHorizontalFlip).")

    @property
    def affine(self) -> bool:
        """Rotation, shift or zoom: the batched affine resampling."""
        return bool(self.rotation or self.translate or self.scale != (1.0, 1.0))

    @property
    def active(self) -> bool:
        return self.affine or bool(self.crop) or self.flip


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = option(5, "Passes over the training set.", at_least(1))
    batch_size: int = option(
        256, "Examples per optimiser step; the last batch of an epoch may be smaller.", at_least(1)
    )
    optimizer: Literal["adam", "adamw", "sgd"] = option(
        "adam", "torch.optim.Adam or AdamW (betas 0.9/0.999, eps 1e-8), or SGD."
    )
    lr: float = option(1e-3, "Learning rate.", above(0.0))
    weight_decay: float = option(
        0.0, "Weight decay: L2 added to the gradient (adam, sgd), decoupled (adamw).", at_least(0.0)
    )
    momentum: float = option(0.0, "SGD momentum (sgd only).", fraction_below_one)
    nesterov: bool = option(False, "Nesterov momentum (sgd only; needs momentum > 0).")
    init: Literal[
        "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"
    ] = option(
        "default",
        "Weight initialisation of every linear and conv layer: PyTorch's own, or the named one with biases set to"
        " zero.",
    )
    loss: Literal["cross_entropy", "mse"] = option(
        "cross_entropy", "`cross_entropy` on the logits, or `mse` between softmax(logits) and the one-hot target."
    )
    label_smoothing: float = option(
        0.0, "Label smoothing of the cross-entropy target (cross_entropy only).", fraction_below_one
    )
    grad_clip: float | None = option(
        None, "Clip the global L2 norm of the gradients to this value; unset: no clipping.", above(0.0)
    )
    schedule: ScheduleSpec = option(
        ConstantSchedule(), "Learning-rate schedule: a kind name (`\"cosine\"`) or a table (`{ kind = \"step\", "
                            "step_size = 2 }`)."
    )
    early_stopping: EarlyStopping | None = option(
        None, "Stop when the validation metric stops improving, e.g. `{ patience = 5, min_delta = 0.001 }`; unset: off."
    )
    augment: Augment = option(
        Augment(), "Augmentation of training batches on the device, a different transform per image, e.g. `{ rotation "
                   "= 7 }`."
    )


@dataclass(frozen=True)
class TrialSettings:
    """Everything that determines a trial's result; its hash is the trial's identity."""

    dataset: str
    seed: int
    data: DataSettings
    model: ModelSpec
    train: TrainSettings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExecutionSettings:
    """Where and how many trials run at once; never part of a trial's identity (results do not depend on it)."""

    devices: Literal["auto", "cpu"] | tuple[int, ...] = option(
        "auto", "`auto`: every visible CUDA GPU, else the CPU; `cpu`; or a list of GPU indices such as [0, 2].",
    )
    workers_per_device: int | None = option(
        None,
        "Worker processes per device, each training one trial at a time; unset: 1 per GPU, and on the CPU one "
        "per core. CPU workers use one torch thread each, so a result never depends on how many workers ran it.",
        at_least(1),
    )
    max_workers: int | None = option(None, "Upper bound on the worker processes overall; unset: no bound.", at_least(1))
    backend: Literal["local", "ray"] = option(
        "local",
        "`local`: worker processes on this machine. `ray`: one actor per slot on every node of a Ray cluster "
        "(`pip install \"ablate[ray]\"`); `devices` is then `auto` (every GPU of every node) or `cpu`.",
    )
    address: str | None = option(
        None,
        "The Ray cluster for `backend = \"ray\"`: `host:port` of its head, or `auto`; unset: `RAY_ADDRESS`, else a "
        "cluster running on this machine, else a new one on this machine.",
    )
    pack: int | Literal["auto"] = option(
        1,
        "Train up to this many trials of one architecture together, as one batched network in one worker (each "
        "still its own run with its own metrics). They may differ in seed, lr, weight_decay, momentum, init, "
        "schedule, label_smoothing, grad_clip, early_stopping and dropout rates; custom and torchvision models never "
        "pack (`auto` trains them one by one). 1: off. `auto`: on GPUs up to 8; on the CPU, per architecture, packs "
        "of up to 4 where a few timed steps show packing trains a trial at least 15% faster (small CNNs), else none.",
        lambda v: None if v == "auto" else at_least(1)(v),
    )
    graphs: Literal["auto", "off"] = option(
        "off",
        "CUDA graphs. `auto`: on a GPU, each single trial's training step is captured once as a CUDA graph and "
        "replayed for every full batch (one launch a step instead of dozens); that step keeps its rates and step "
        "count on the GPU and uses ablate's own Adam, AdamW or SGD, so its numbers differ from the eager step's by "
        "float rounding. Packs and the CPU train eagerly either way. `off`: eager; the "
        "default until a GPU has measured `auto` against it.",
    )


STATS_METRICS = ("test_accuracy", "val_accuracy", "test_loss", "val_loss")


def _level(v: float) -> str | None:
    return None if 0 < v < 0.5 else "must be between 0 and 0.5"


@dataclass(frozen=True)
class StatsSettings:
    """How comparisons become verdicts (better / worse / equivalent / undecided); never part of a trial's identity."""

    margin: float = option(
        0.1,
        "δ, the smallest difference that matters, in the units the report shows the metric in: accuracy in "
        "percentage points (0.1 = a tenth of a point), a loss in its own units. An arm whose difference from the "
        "baseline is shown to lie within ±δ is `equivalent`.",
        above(0.0),
    )
    alpha: float = option(
        0.05,
        "Error rate of the verdicts, over all the arms of the study: Holm's correction across arms; with adaptive "
        "seeds, Bonferroni across arms and repeated confidence intervals across rounds.",
        _level,
    )
    metric: Literal[STATS_METRICS] = option(
        "test_accuracy", "The metric the verdicts compare (and adaptive seeds decide on); the report's default metric."
    )


@dataclass(frozen=True)
class TrackingSettings:
    """What a study's runs keep in MLflow besides metrics; never part of a trial's identity."""

    models: Literal["none", "best", "all"] = option(
        "best",
        "Trained models kept in MLflow, raw images in, class scores out: `ablate export` writes them as files (weights "
        "read with weights_only=True); a network that torch.exports is also an MLflow model "
        "(`mlflow.pytorch.load_model(\"runs:/<id>/model\")`, which unpickles: only from a store you trust). `best`: "
        "each arm's best run by test accuracy, chosen once the arm's seeds are all done (a run that is its arm's best "
        "so far keeps its model until a better one finishes); `all`: every trial's; `none`. Early stopping keeps the "
        "restored weights as `model`, the last epoch's as `model-last`.",
    )


@dataclass(frozen=True)
class Stage:
    """One arm of a study — a ladder stage, an ablation arm or a grid point: its settings, without the seed."""

    name: str
    description: str
    reference: float | None  # a published test accuracy (%) to set beside ours; not a setting
    index: int
    data: DataSettings
    model: ModelSpec
    train: TrainSettings
    compare_to: int | None = None  # the arm whose settings `changes` are described against
    point: tuple[tuple[str, Any], ...] = ()  # grid: (axis, value as written) of this point
    source: str = ""  # the table it is written in ('stage[2]', 'arm[1]'), '' for the top level: for messages

    def settings(self, dataset: str, seed: int) -> TrialSettings:
        return TrialSettings(dataset=dataset, seed=seed, data=self.data, model=self.model, train=self.train)


@dataclass(frozen=True)
class Study:
    info: StudyInfo
    stages: tuple[Stage, ...]  # every arm, in report order
    path: str
    text: str = field(repr=False)
    axes: tuple[str, ...] = ()  # grid: the axes' setting paths
    excluded: int = 0  # grid: points `[[exclude]]` removed
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    adaptive: AdaptiveSeeds | None = None  # adaptive seeds; info.seeds then lists all `max` of them
    search: SearchSpec | None = None
    top: Layer | None = field(default=None, repr=False)  # search: the top-level settings layer, to resolve points
    sources: tuple[ArmSource, ...] = field(default=(), repr=False)  # search: the stages as written

    @property
    def name(self) -> str:
        return self.info.name


