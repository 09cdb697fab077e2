"""Study files: TOML → validated, typed study. Every check on user input lives here.

The dataclasses below are the schema: their fields name the allowed keys, their type
hints the allowed types, their defaults the defaults and their metadata the extra
checks and the documentation (``ablate schema`` prints it). Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
import tomllib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal

from ablate.errors import SpecError, did_you_mean

Check = Callable[[Any], "str | None"]


def option(default: Any = MISSING, doc: str = "", check: Check | None = None) -> Any:
    """A schema field: its default, one line of documentation and an optional check."""
    metadata = {"doc": doc, "check": check}
    if isinstance(default, dict):  # dataclasses refuse a shared mutable default
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be ≥ {low}"


def above(low: float) -> Check:
    return lambda v: None if v > low else f"must be > {low}"


def fraction_below_one(v: float) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be in [0, 1)"


def identifier(v: str) -> str | None:
    ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v)
    return None if ok else "must be letters, digits, '.', '_' or '-', starting with a letter or digit"


def nonempty(v: tuple) -> str | None:
    return None if v else "must not be empty"


def each_at_least(low: int) -> Check:
    return lambda v: None if all(x >= low for x in v) else f"every entry must be ≥ {low}"


def unique_ints(v: tuple) -> str | None:
    if not v:
        return "must list at least one seed"
    return None if len(set(v)) == len(v) else "must not repeat a seed"


# ---------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetInfo:
    """What validation and parameter counting need to know of a dataset, without loading it."""

    shape: tuple[int, int, int]
    classes: int
    train_size: int
    test_size: int


DATASETS = {"mnist": DatasetInfo(shape=(1, 28, 28), classes=10, train_size=60_000, test_size=10_000)}


# ---------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class StudyInfo:
    name: str = option(doc="Study name; also the MLflow experiment name.", check=identifier)
    dataset: Literal["mnist"] = option("mnist", "Dataset every trial trains on.")
    design: Literal["ladder", "grid", "ablation", "search"] = option(
        "ladder",
        "How the study becomes trials. `ladder`: the `[[stage]]`s in order, each compared with the first; "
        "`grid`: every combination of the `[grid]` axes (× the stages, if any); `ablation`: the top-level "
        "settings as the baseline plus each `[[arm]]`, an arm changing one or more of them; `search`: an Optuna "
        "search over `[search.space]`, its best configurations re-trained on fresh seeds.",
    )
    seeds: tuple[int, ...] = option((0,), "Seeds every arm runs with (the same in every arm, so comparisons pair).", unique_ints)
    baseline: str | None = option(
        None,
        "The arm every other is compared with in reports: `ladder`, a stage's name (unset: the first); `ablation`, "
        "the name the top-level settings go by (unset: `baseline`); `grid`, a point's name as `ablate plan` shows it "
        "(unset: the first point).",
    )
    description: str = option("", "Free text shown in reports.")


@dataclass(frozen=True)
class DataSettings:
    val_size: int = option(5000, "Validation examples split from the training set.", at_least(1))
    split_seed: int = option(0, "Seed of the train/validation split; the same split for every trial.")
    normalize: Literal["standard", "unit"] = option(
        "standard",
        "Pixel scaling: `standard` subtracts the training set's mean and divides by its std (Normalize); "
        "`unit` only scales to [0, 1] (ToTensor alone).",
    )
    train_limit: int | None = option(None, "Use only this many training examples (smoke tests).", at_least(1))
    test_limit: int | None = option(None, "Evaluate on only this many test examples (smoke tests).", at_least(1))


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
    kind: Literal["step"] = option("step", "StepLR: multiply the rate by `gamma` every `step_size` epochs (stepped per epoch).")
    step_size: int = option(doc="Epochs between decays.", check=at_least(1))
    gamma: float = option(0.1, "Decay factor.", above(0.0))


@dataclass(frozen=True, kw_only=True)
class MultiStepSchedule:
    kind: Literal["multistep"] = option("multistep", "MultiStepLR: multiply the rate by `gamma` at each milestone epoch.")
    milestones: tuple[int, ...] = option(doc="Epochs after which the rate decays, increasing.", check=increasing)
    gamma: float = option(0.1, "Decay factor.", above(0.0))


@dataclass(frozen=True, kw_only=True)
class ExponentialSchedule:
    kind: Literal["exponential"] = option("exponential", "ExponentialLR: multiply the rate by `gamma` after every epoch.")
    gamma: float = option(doc="Decay factor per epoch.", check=above(0.0))


@dataclass(frozen=True)
class CosineSchedule:
    kind: Literal["cosine"] = option("cosine", "CosineAnnealingLR from `train.lr` to `min_lr` over the whole run, stepped per batch.")
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
    min_delta: float = option(0.0, "Smallest change that counts as an improvement (accuracy as a fraction).", at_least(0.0))
    restore_best: bool = option(True, "Test (and report) the weights of the best epoch, not the last.")


@dataclass(frozen=True)
class Augment:
    rotation: float = option(0.0, "Random rotation in ± degrees; 0 turns it off.", at_least(0.0))
    translate: float = option(0.0, "Random shift of up to this fraction of the width and height; 0: off.", fraction_below_one)
    scale: tuple[float, ...] = option((1.0, 1.0), "Random zoom factor drawn from [low, high]; [1, 1]: off.", scale_range)

    @property
    def active(self) -> bool:
        return bool(self.rotation or self.translate or self.scale != (1.0, 1.0))


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = option(5, "Passes over the training set.", at_least(1))
    batch_size: int = option(256, "Examples per optimiser step; the last batch of an epoch may be smaller.", at_least(1))
    optimizer: Literal["adam", "adamw", "sgd"] = option(
        "adam", "torch.optim.Adam or AdamW (betas 0.9/0.999, eps 1e-8), or SGD."
    )
    lr: float = option(1e-3, "Learning rate.", above(0.0))
    weight_decay: float = option(0.0, "Weight decay: L2 added to the gradient (adam, sgd), decoupled (adamw).", at_least(0.0))
    momentum: float = option(0.0, "SGD momentum (sgd only).", fraction_below_one)
    nesterov: bool = option(False, "Nesterov momentum (sgd only; needs momentum > 0).")
    init: Literal["default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"] = option(
        "default",
        "Weight initialisation of every linear and conv layer: PyTorch's own, or the named one with biases set to zero.",
    )
    loss: Literal["cross_entropy", "mse"] = option(
        "cross_entropy", "`cross_entropy` on the logits, or `mse` between softmax(logits) and the one-hot target."
    )
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy target (cross_entropy only).", fraction_below_one)
    grad_clip: float | None = option(None, "Clip the global L2 norm of the gradients to this value; unset: no clipping.", above(0.0))
    schedule: ScheduleSpec = option(
        ConstantSchedule(), "Learning-rate schedule: a kind name (`\"cosine\"`) or a table (`{ kind = \"step\", step_size = 2 }`)."
    )
    early_stopping: EarlyStopping | None = option(
        None, "Stop when the validation metric stops improving, e.g. `{ patience = 5, min_delta = 0.001 }`; unset: off."
    )
    augment: Augment = option(
        Augment(), "Augmentation of training batches on the device, a different transform per image, e.g. `{ rotation = 7 }`."
    )


@dataclass(frozen=True)
class LinearModel:
    kind: Literal["linear"] = option("linear", "One linear layer from the flattened input to the classes.")


@dataclass(frozen=True)
class MLPModel:
    kind: Literal["mlp"] = option("mlp", "Fully connected network on the flattened input.")
    hidden: tuple[int, ...] = option((256,), "Width of each hidden layer, input side first.", each_at_least(1))
    activation: Literal["relu", "gelu", "tanh", "none"] = option("relu", "Activation after each hidden layer.")
    dropout: float = option(0.0, "Dropout probability after each hidden activation; 0 turns it off.", fraction_below_one)
    batchnorm: bool = option(False, "BatchNorm1d after each hidden linear layer, before the activation.")
    output_activation: Literal["none", "relu"] = option(
        "none", "Activation on the logits; `relu` reproduces system N's V1 (a lesson, not a recommendation)."
    )


ACTIVATION_NAMES = ("relu", "gelu", "tanh", "none")


@dataclass(frozen=True)
class ConvBlock:
    out: int = option(doc="Output channels of the 3×3 (or `kernel`) convolution.", check=at_least(1))
    kernel: int = option(3, "Square kernel size.", at_least(1))
    padding: int = option(0, "Zero padding on each side.", at_least(0))
    batchnorm: bool | None = option(None, "BatchNorm2d after the conv; unset: the model's `batchnorm`.")
    activation: Literal["relu", "gelu", "tanh", "none"] | None = option(
        None, "Activation after the conv (and BN); unset: the model's `activation`."
    )
    dropout: float | None = option(
        None, "Dropout after the activation; unset: the model's `dropout`.", fraction_below_one
    )
    pool: bool = option(False, "2×2 max-pool at the end of the block.")


@dataclass(frozen=True, kw_only=True)
class CNNModel:
    kind: Literal["cnn"] = option("cnn", "Convolution blocks, then a head.")
    blocks: tuple[ConvBlock, ...] = option(
        doc="Conv blocks in order: conv → BN → activation → dropout → max-pool, each part as the block says.",
        check=nonempty,
    )
    head: Literal["linear", "gap", "conv-gap"] = option(
        "linear",
        "`linear`: flatten → linear to the classes; `gap`: global average pool (the last block must output one "
        "channel per class); `conv-gap`: 1×1 conv to the classes → global average pool.",
    )
    batchnorm: bool | None = option(False, "Default `batchnorm` of every block (folded into the blocks).")
    activation: Literal["relu", "gelu", "tanh", "none"] | None = option("relu", "Default `activation` of every block.")
    dropout: float | None = option(0.0, "Default `dropout` of every block.", fraction_below_one)

    def resolved(self) -> "CNNModel":
        """Fold the model-level defaults into every block, so equal networks hash equal."""
        blocks = tuple(
            replace(
                b,
                batchnorm=self.batchnorm if b.batchnorm is None else b.batchnorm,
                activation=self.activation if b.activation is None else b.activation,
                dropout=self.dropout if b.dropout is None else b.dropout,
            )
            for b in self.blocks
        )
        return replace(self, blocks=blocks, batchnorm=None, activation=None, dropout=None)


def factory_reference(v: str) -> str | None:
    ok = re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v)
    return None if ok else "must be 'package.module:function'"


@dataclass(frozen=True, kw_only=True)
class CustomModel:
    """Every key besides `kind` and `factory` is passed to the factory as a keyword argument."""

    kind: Literal["custom"] = option(
        "custom", "Your own torch module: `factory(**kwargs)` must return an nn.Module mapping images to class scores."
    )
    factory: str = option(
        doc="`package.module:function`, importable where ablate runs (e.g. a module beside the study).",
        check=factory_reference,
    )
    kwargs: dict = option(
        {}, "Keyword arguments of the factory; any other key of the table lands here."
    )

    EXTRA_KEYS = "kwargs"  # where _check_table puts keys the schema does not name


MODEL_KINDS: dict[str, type] = {"linear": LinearModel, "mlp": MLPModel, "cnn": CNNModel, "custom": CustomModel}
ModelSpec = LinearModel | MLPModel | CNNModel | CustomModel

# Sections a trial's settings are made of, each overridable per stage.
SECTIONS: dict[str, type] = {"data": DataSettings, "train": TrainSettings}


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
    pack: int = option(
        1,
        "Train up to this many trials of one architecture together, as one batched network in one worker (each "
        "still its own run with its own metrics). They may differ in seed, lr, weight_decay, momentum, init, "
        "schedule, label_smoothing, grad_clip, early_stopping and dropout rates; custom models never pack. 1: off.",
        at_least(1),
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
    search: "SearchSpec | None" = None
    top: Any = field(default=None, repr=False)  # search: the top-level settings layer, to resolve points later
    sources: tuple = field(default=(), repr=False)  # search: the stages as written

    @property
    def name(self) -> str:
        return self.info.name


# ---------------------------------------------------------------------------- validation

# Tables whose allowed keys depend on their `kind`; a layer naming another kind replaces them.
KINDED: dict[str, dict[str, type]] = {"model": MODEL_KINDS, "train.schedule": SCHEDULE_KINDS}
SETTING_TABLES: dict[str, Any] = {"data": DataSettings, "train": TrainSettings, "model": ModelSpec}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


AXIS_PREFIXES = ("grid.", "search.space.")  # where settings written by a grid axis or a search space are shown


@dataclass
class _Context:
    """Resolution state: where the user wrote each key, so errors name the user's own key path."""

    file: str
    origins: dict[str, str] = field(default_factory=dict)  # canonical path → path as written
    lenient: bool = False  # a grid point: what its axes set that does not apply is dropped, not an error
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (canonical path, why)

    def at(self, path: str) -> str:
        owners = [c for c in self.origins if path == c or path.startswith((c + ".", c + "["))]
        if not owners:
            return path
        best = max(owners, key=len)
        shown = self.origins[best]
        return shown if shown.startswith(AXIS_PREFIXES) else shown + path[len(best) :]

    def error(self, path: str, message: str) -> SpecError:
        return SpecError(self.file, self.at(path), message)

    def from_axis(self, path: str) -> bool:
        return self.lenient and self.at(path).startswith(AXIS_PREFIXES)


def _kinds_of(tp: Any) -> dict[str, type] | None:
    """The kind → class map of a union of kinded tables (models, schedules); None for other types."""
    if typing.get_origin(tp) not in (types.UnionType, typing.Union):
        return None
    members = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(members) > 1 and all(is_dataclass(m) and "kind" in {f.name for f in fields(m)} for m in members):
        return {m.kind: m for m in members}
    return None


def _describe(tp: Any) -> str:
    """How a type reads in an error message."""
    kinds = _kinds_of(tp)
    if kinds:
        return f"a kind name or a table with `kind` ({', '.join(map(repr, kinds))})"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return "a list of tables" if is_dataclass(item) else f"a list of {_PLURAL.get(item, 'values')}"
    if is_dataclass(tp):
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}.get(tp, str(tp))


_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _coerce(value: Any, tp: Any, ctx: _Context, path: str) -> Any:
    """Check a TOML value against a type hint; return it in canonical form (ints as floats, lists as tuples)."""
    kinds = _kinds_of(tp)
    if kinds is not None:
        return _coerce_kinded(value, kinds, ctx, path)
    origin = typing.get_origin(tp)
    wrong = ctx.error(path, f"must be {_describe(tp)}, not {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
            raise ctx.error(path, f"{value!r} is not allowed{hint}; allowed: {', '.join(map(repr, allowed))}")
        return value
    if origin in (types.UnionType, typing.Union):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _coerce(value, members[0], ctx, path)
        for member in members:  # e.g. "auto" or [0, 2]: the first reading that fits
            try:
                return _coerce(value, member, ctx, path)
            except SpecError:
                continue
        raise wrong
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise wrong
        item = typing.get_args(tp)[0]
        return tuple(_coerce(v, item, ctx, f"{path}[{i + 1}]") for i, v in enumerate(value))
    if is_dataclass(tp):
        return _build(tp, _check_table(value, tp, ctx, path), ctx, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise wrong
        return float(value)
    if tp in (str, dict):
        if not isinstance(value, tp):
            raise wrong
        return value
    raise TypeError(f"schema type {tp!r} is not supported")


def _coerce_kinded(value: Any, kinds: dict[str, type], ctx: _Context, path: str) -> Any:
    label = path.rsplit(".", 1)[-1]
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, dict):
        raise ctx.error(path, f"must be a kind name or a table with `kind`, not {value!r}")
    kind = value.get("kind")
    allowed = ", ".join(kinds)
    if kind is None:
        raise ctx.error(_join(path, "kind"), f"is required (in [{path}] or the stage); allowed: {allowed}")
    if kind not in kinds:
        hint = did_you_mean(str(kind), kinds)
        raise ctx.error(_join(path, "kind"), f"unknown {label} kind {kind!r}{hint}; allowed: {allowed}")
    cls = kinds[kind]
    built = _build(cls, _check_table(value, cls, ctx, path, f"{label} kind '{kind}'", kinds), ctx, path)
    return built.resolved() if isinstance(built, CNNModel) else built


def _unknown_key(key: str, cls: type, owner: str, kinds: dict[str, type] | None) -> str:
    known = [f.name for f in fields(cls)]
    allows = f"{owner} allows: {', '.join(known)}"
    elsewhere = [k for k, c in (kinds or {}).items() if key in {f.name for f in fields(c)}]
    if elsewhere:
        label, kind = owner.split(" kind ")
        owners = ", ".join(map(repr, elsewhere))
        return f"applies only to {label} kind{'s' if len(elsewhere) > 1 else ''} {owners} ({label} kind is {kind}); {allows}"
    return f"unknown key{did_you_mean(key, known)}; {allows}"


def _check_table(
    raw: Any, cls: type, ctx: _Context, path: str, what: str = "", kinds: dict[str, type] | None = None
) -> dict[str, Any]:
    """Validate the keys present in one TOML table against a schema class (missing keys allowed)."""
    if not isinstance(raw, dict):
        raise ctx.error(path, f"must be a table, not {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    extra = getattr(cls, "EXTRA_KEYS", None)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = _join(path, key)
        if extra and (key not in known or key == extra):
            if key == extra and not isinstance(value, dict):
                raise ctx.error(key_path, f"must be a table, not {value!r}")
            arguments = value if key == extra else {key: value}
            for name, argument in arguments.items():
                if name in out.get(extra, {}):
                    raise ctx.error(_join(path, name), f"is given twice (as a key and inside `{extra}`)")
                if not _plain(argument):
                    raise ctx.error(_join(path, name), f"must be a string, number, boolean, list or table, not {argument!r}")
            out.setdefault(extra, {}).update(arguments)
            continue
        if key not in known:
            why = _unknown_key(key, cls, what or f"[{path}]", kinds)
            # Dropped only when another axis set the kind: inside one axis's own table it is the user's mistake.
            if kinds and ctx.from_axis(key_path) and ctx.at(key_path) != ctx.at(_join(path, "kind")):
                ctx.dropped.append((key_path, why))
                continue
            raise ctx.error(key_path, why)
        coerced = _coerce(value, hints[key], ctx, key_path)
        check = known[key].metadata.get("check")
        problem = check(coerced) if check else None
        if problem:
            raise ctx.error(key_path, f"{problem} (got {value!r})")
        out[key] = coerced
    return out


def _plain(value: Any) -> bool:
    """A TOML value that JSON can carry (no dates and times): a custom model's keyword arguments are hashed."""
    if isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    return False


def _build(cls: type, values: dict[str, Any], ctx: _Context, path: str) -> Any:
    for f in fields(cls):
        if f.default is MISSING and f.default_factory is MISSING and f.name not in values:
            shown = ctx.at(_join(path, f.name))
            raise SpecError(ctx.file, shown, "is required" if shown.endswith(f.name) else f"needs `{f.name}`")
    return cls(**values)


def _overlay(tree: dict, origins: dict[str, str], layer: dict, shown: Callable[[str], str | None], prefix: str = "") -> None:
    """Deep-merge one layer of TOML tables into the tree, recording where each key was written.

    A kinded table (model, schedule) naming another kind replaces the one below instead of merging.
    """
    for key, value in layer.items():
        path = _join(prefix, key)
        if path in KINDED and isinstance(value, str):
            value = {"kind": value}
        old = tree.get(key)
        merges = isinstance(value, dict) and isinstance(old, dict)
        if merges and path in KINDED and value.get("kind", old.get("kind")) != old.get("kind"):
            merges = False
        if not merges:
            for canon in [c for c in origins if c.startswith((path + ".", path + "["))]:
                del origins[canon]
            tree[key] = {} if isinstance(value, dict) else value
        where = shown(path)
        if where is not None:
            origins[path] = where
        if isinstance(value, dict):
            _overlay(tree[key], origins, value, shown, path)


def _meaningless(train: TrainSettings) -> list[tuple[str, str, str, Any]]:
    """(setting, the setting that makes it meaningless, why, its off value) for contradictory settings."""
    found = []
    if train.optimizer != "sgd":
        why = f"applies only to optimizer 'sgd' (optimizer is '{train.optimizer}')"
        found += [(key, "optimizer", why, off) for key, off in (("momentum", 0.0), ("nesterov", False)) if getattr(train, key) != off]
    elif train.nesterov and train.momentum == 0:
        found.append(("nesterov", "momentum", "needs momentum > 0 (as torch.optim.SGD does)", False))
    if train.loss != "cross_entropy" and train.label_smoothing:
        found.append(("label_smoothing", "loss", f"applies only to loss 'cross_entropy' (loss is '{train.loss}')", 0.0))
    return found


def _settle_contradictions(train: TrainSettings, ctx: _Context) -> TrainSettings:
    """Reject a contradiction the user wrote; where a grid axis made it, the meaningless setting is off (a no-op)."""
    for key, cause, why, off in _meaningless(train):
        if ctx.from_axis(f"train.{key}") or ctx.from_axis(f"train.{cause}"):
            train = replace(train, **{key: off})
            ctx.dropped.append((f"train.{key}", why))
        else:
            if ctx.at(f"train.{cause}") != f"train.{cause}":  # set somewhere else than the key: say where
                why += f"; {cause} is set at {ctx.at(f'train.{cause}')}"
            raise ctx.error(f"train.{key}", why)
    schedule = train.schedule
    if isinstance(schedule, CosineSchedule | WarmupCosineSchedule) and schedule.min_lr > train.lr:
        raise ctx.error("train.schedule.min_lr", f"must be ≤ train.lr ({train.lr:g}): the schedule decays to it")
    if isinstance(schedule, WarmupCosineSchedule) and schedule.warmup_epochs >= train.epochs:
        raise ctx.error("train.schedule.warmup_epochs", f"must be < train.epochs ({train.epochs}), or no cosine phase is left")
    return train


def _check_limits(dataset: DatasetInfo, data: DataSettings, ctx: _Context) -> None:
    if data.val_size >= dataset.train_size:
        raise ctx.error("data.val_size", f"must be < {dataset.train_size}, the training set's size")
    room = dataset.train_size - data.val_size
    if data.train_limit is not None and data.train_limit > room:
        raise ctx.error("data.train_limit", f"must be ≤ {room} (training set minus validation)")
    if data.test_limit is not None and data.test_limit > dataset.test_size:
        raise ctx.error("data.test_limit", f"must be ≤ {dataset.test_size}, the test set's size")


Layer = tuple[dict, Callable[[str], "str | None"]]


def _resolve(layers: list[Layer], ctx: _Context, where: str, dataset: DatasetInfo) -> tuple[DataSettings, ModelSpec, TrainSettings]:
    """Merge the layers (top level, stage or arm, grid point) and validate the result as one trial's settings."""
    # A kinded table with a default starts as that kind, so a key written without `kind` is checked against it.
    tree: dict[str, Any] = {"train": {"schedule": {"kind": ConstantSchedule.kind}}}
    for layer, shown in layers:
        _overlay(tree, ctx.origins, layer, shown)
    data = _coerce(tree.get("data", {}), DataSettings, ctx, "data")
    train = _coerce(tree.get("train", {}), TrainSettings, ctx, "train")
    if "model" not in tree:
        raise SpecError(ctx.file, f"{where}.model.kind", f"is required (in [model] or the {where.split('[')[0]}); allowed: {', '.join(MODEL_KINDS)}")
    model = _coerce(tree["model"], ModelSpec, ctx, "model")
    train = _settle_contradictions(train, ctx)
    _check_limits(dataset, data, ctx)
    return data, model, train


def _written(prefix: str) -> Callable[[str], str]:
    return lambda path: f"{prefix}.{path}" if prefix else path


# ---------------------------------------------------------------------------- arms: stages, ablation arms

ARM_KEYS = ("name", "description", "reference", "model", "data", "train")
TOP_KEYS = ("study", "data", "train", "model", "stage", "arm", "grid", "exclude", "execution", "search")


@dataclass(frozen=True)
class _ArmSource:
    """A stage or arm as written: its labels and its settings layer."""

    name: str
    description: str
    reference: float | None
    layer: dict
    where: str  # 'stage[2]', 'arm[1]', or '' for the top-level settings


def _arm_source(raw: Any, index: int, table: str, file: str) -> _ArmSource:
    path = f"{table}[{index + 1}]"
    if not isinstance(raw, dict):
        raise SpecError(file, path, f"must be a table ([[{table}]])")
    for key in raw:
        if key not in ARM_KEYS:
            allowed = ", ".join(ARM_KEYS)
            raise SpecError(file, _join(path, key), f"unknown key{did_you_mean(key, ARM_KEYS)}; a {table} allows: {allowed}")
    name = raw.get("name")
    if name is None:
        raise SpecError(file, _join(path, "name"), f"is required: every {table} needs a name")
    if not isinstance(name, str) or identifier(name):
        raise SpecError(file, _join(path, "name"), f"{identifier(str(name))} (got {name!r})")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise SpecError(file, _join(path, "description"), f"must be a string, not {description!r}")
    reference = raw.get("reference")
    if reference is not None:
        reference = _coerce(reference, float, _Context(file), _join(path, "reference"))
        if not 0.0 <= reference <= 100.0:
            raise SpecError(file, _join(path, "reference"), f"is a test accuracy in percent, in [0, 100] (got {reference})")
    layer = {key: raw[key] for key in SETTING_TABLES if key in raw}
    return _ArmSource(name, description, reference, layer, path)


def _arm_sources(raw: dict, info: StudyInfo, file: str) -> list[_ArmSource]:
    """The arms as written, by design: ladder stages; ablation baseline + arms; grid stages (or one base)."""
    design = info.design
    table = "arm" if design == "ablation" else "stage"
    for other, allowed in (("stage", ("ladder", "grid", "search")), ("arm", ("ablation",)), ("grid", ("grid",)),
                           ("exclude", ("grid",)), ("search", ("search",))):
        if other in raw and design not in allowed:
            shown = f"[[{other}]]" if other in ("stage", "arm", "exclude") else f"[{other}]"
            raise SpecError(file, other, f"{shown} belongs to design {' or '.join(map(repr, allowed))}, not '{design}' (study.design)")
    listed = raw.get(table)
    if listed is not None and not isinstance(listed, list):
        raise SpecError(file, table, f"must be an array of tables: write [[{table}]], not [{table}]")
    sources = [_arm_source(s, i, table, file) for i, s in enumerate(listed or [])]
    if design == "ablation":
        if not sources:
            raise SpecError(file, "arm", "is required: an ablation needs at least one [[arm]] beside the baseline")
        name = info.baseline or "baseline"
        if identifier(name):
            raise SpecError(file, "study.baseline", f"{identifier(name)} (got {name!r})")
        sources.insert(0, _ArmSource(name, "the top-level settings", None, {}, ""))
    elif design in ("grid", "search"):
        if design not in raw:
            example = '"model.dropout" = [0.0, 0.5]' if design == "grid" else '[search.space] "train.lr" = { low = 1e-4, high = 1e-2, log = true }'
            raise SpecError(file, design, f"is required for design '{design}', e.g. {example}")
        if not sources:
            sources = [_ArmSource("base", "", None, {}, "")]
    elif not sources:
        raise SpecError(file, "stage", "is required: at least one [[stage]] table")
    seen: dict[str, str] = {}
    for source in sources:
        if source.name in seen:
            first = seen[source.name] or "the baseline"
            raise SpecError(file, f"{source.where}.name", f"'{source.name}' is already the name of {first}")
        seen[source.name] = source.where
    return sources


# ---------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class _Grid:
    axes: tuple[tuple[str, tuple[Any, ...]], ...]  # (setting path, values) in file order
    exclude: tuple[dict[str, tuple[Any, ...]], ...]  # each rule: axis → the values it excludes


def _axis_name(path: str) -> str:
    return f'grid."{path}"'


def _parse_grid(raw: dict, file: str) -> _Grid:
    table = raw["grid"]
    if not isinstance(table, dict) or not table:
        raise SpecError(file, "grid", 'must be a table of axes, e.g. "model.dropout" = [0.0, 0.5]')
    axes = []
    for path, values in table.items():
        head = path.split(".", 1)[0]
        if head not in SETTING_TABLES or "." not in path:
            hint = did_you_mean(head, SETTING_TABLES) if "." in path else ""
            raise SpecError(
                file, _axis_name(path),
                f"an axis is a quoted setting path starting with data., train. or model.{hint} (e.g. \"model.dropout\")",
            )
        if isinstance(values, dict):
            raise SpecError(file, _axis_name(path), 'must be a list of values; quote the dotted path: "model.dropout" = [0.0, 0.5]')
        if not isinstance(values, list) or not values:
            raise SpecError(file, _axis_name(path), f"must be a non-empty list of values, not {values!r}")
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise SpecError(file, _axis_name(path), f"lists {repeated[0]!r} twice")
        axes.append((path, tuple(values)))
    names = [p for p, _ in axes]
    for a in names:
        for b in names:
            if b.startswith(a + ".") and a not in KINDED:
                raise SpecError(file, _axis_name(b), f"is inside axis \"{a}\"; set it in that axis's tables instead")
    rules = raw.get("exclude", [])
    if not isinstance(rules, list):
        raise SpecError(file, "exclude", "must be an array of tables: write [[exclude]]")
    values_of = dict(axes)
    exclude = []
    for i, rule in enumerate(rules, 1):
        where = f"exclude[{i}]"
        if not isinstance(rule, dict) or not rule:
            raise SpecError(file, where, 'must be a table of axis = value(s), e.g. "model.batchnorm" = true')
        parsed = {}
        for path, wanted in rule.items():
            if path not in values_of:
                raise SpecError(file, f'{where}."{path}"', f"is not a grid axis{did_you_mean(path, names)}; axes: {', '.join(names)}")
            wanted = tuple(wanted) if isinstance(wanted, list) else (wanted,)
            for value in wanted:
                if value not in values_of[path]:
                    listed = ", ".join(map(repr, values_of[path]))
                    raise SpecError(file, f'{where}."{path}"', f"{value!r} is not a value of this axis; it takes: {listed}")
            parsed[path] = wanted
        exclude.append(parsed)
    return _Grid(tuple(axes), tuple(exclude))


def _axis_layer(point: tuple[tuple[str, Any], ...]) -> dict:
    """{'model.dropout': 0.5, 'train.schedule': 'step'} → nested tables; whole tables first, then keys inside them."""
    layer: dict = {}
    for path, value in sorted(point, key=lambda item: item[0].count(".")):
        *parents, leaf = path.split(".")
        node = layer
        for depth, part in enumerate(parents):
            child = node.get(part)
            if isinstance(child, str) and ".".join(parents[: depth + 1]) in KINDED:
                child = {"kind": child}
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[leaf] = value
    return layer


def _format_label_value(value: Any) -> str:
    if isinstance(value, dict):
        inner = " ".join(f"{k}={_format_label_value(v)}" for k, v in value.items() if k != "kind")
        return f"{value.get('kind', '')}({inner})" if inner else str(value.get("kind", ""))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_format_label_value(v) for v in value) + "]"
    return str(value)


def _short_axis_names(paths: list[str]) -> dict[str, str]:
    """'model.dropout' → 'dropout' where the last part alone is unambiguous."""
    leaves = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: leaf if leaves.count(leaf) == 1 else p for p, leaf in zip(paths, leaves)}


def _grid_points(grid: _Grid) -> tuple[list[tuple[tuple[str, Any], ...]], int]:
    """Every combination of the axes' values, in file order, minus the excluded; and how many were excluded."""
    import itertools

    paths = [p for p, _ in grid.axes]
    points, excluded = [], 0
    for values in itertools.product(*(v for _, v in grid.axes)):
        point = tuple(zip(paths, values))
        chosen = dict(point)
        if any(all(chosen[p] in wanted for p, wanted in rule.items()) for rule in grid.exclude):
            excluded += 1
            continue
        points.append(point)
    return points, excluded


def _owning_axis(path: str, axes: list[str]) -> str | None:
    """The axis that set a key: the longest axis path the key is, or is inside."""
    owners = [a for a in axes if path == a or path.startswith(a + ".")]
    return max(owners, key=len) if owners else None


def _axis_origin(paths: list[str], table: str) -> Callable[[str], str | None]:
    """Where a setting an axis wrote is shown in messages: `grid."model.dropout"` (None: not an axis's)."""

    def shown(path: str) -> str | None:
        owner = _owning_axis(path, paths)
        return f'{table}."{owner}"' if owner else None

    return shown


def _expand_grid(
    grid: _Grid, sources: list[_ArmSource], top: Layer, info: StudyInfo, file: str
) -> tuple[list[Stage], int]:
    points, excluded = _grid_points(grid)
    if not points:
        raise SpecError(file, "exclude", "excludes every grid point")
    paths = [p for p, _ in grid.axes]
    short = _short_axis_names(paths)

    shown = _axis_origin(paths, "grid")

    stages: list[Stage] = []
    used: set[str] = set()
    effective: dict[str, set[str]] = {p: set() for p in paths}  # the values of each axis that took effect somewhere
    first_reason: dict[str, str] = {}
    for source in sources:
        for point in points:
            ctx = _Context(file, lenient=True)
            layers = [top, (source.layer, _written(source.where)), (_axis_layer(point), shown)]
            data, model, train = _resolve(layers, ctx, source.where or "grid", DATASETS[info.dataset])
            live = []  # the axes that mean something at this point; the others are left out of its name
            for path, value in point:
                reasons = [why for dropped, why in ctx.dropped if _owning_axis(dropped, paths) == path]
                if reasons:
                    first_reason.setdefault(path, reasons[0])
                else:
                    effective[path].add(repr(value))
                    live.append(f"{short[path]}={_format_label_value(value)}")
            label = " ".join(live) or "base"
            name = label if len(sources) == 1 else f"{source.name} {label}"
            if name in used:  # two values that print alike (a table spelt two ways): keep arms apart
                name = f"{name} #{len(stages) + 1}"
            used.add(name)
            stages.append(
                Stage(name=name, description=source.description, reference=source.reference, index=len(stages),
                      data=data, model=model, train=train, compare_to=0, point=point, source=source.where)
            )
    for path, values in grid.axes:
        surviving = {repr(v) for point in points for p, v in point if p == path}  # what [[exclude]] left
        if len(effective[path]) < min(2, len(surviving)):  # at most one of its values ever took effect
            why = first_reason.get(path, "its other values are all excluded by [[exclude]]")
            raise SpecError(file, _axis_name(path), f"has no effect in any grid point: {why}")
    return stages, excluded * len(sources)  # each stage loses the same points


# ---------------------------------------------------------------------------- search


def _optional_seeds(v: tuple) -> str | None:
    return unique_ints(v) if v else None


@dataclass(frozen=True)
class SearchSettings:
    trials: int | None = option(None, "Optuna trials in all; a second `ablate run` continues up to this count.", at_least(1))
    timeout: float | None = option(None, "Start no new trial after this many seconds of this invocation.", above(0.0))
    objective: Literal["val_accuracy", "val_loss"] = option(
        "val_accuracy", "The validation metric the search optimises (never a test metric), at the last epoch."
    )
    direction: Literal["maximize", "minimize"] | None = option(
        None, "unset: maximize val_accuracy, minimize val_loss."
    )
    sampler: Literal["tpe", "random", "cmaes", "gp", "qmc"] = option("tpe", "Optuna sampler, seeded by `seed`.")
    pruner: Literal["median", "percentile", "successive-halving", "hyperband", "wilcoxon", "none"] = option(
        "median", "Optuna pruner, fed the objective after every epoch."
    )
    seed: int = option(0, "Seed of the sampler, so a search (and its continuation) is reproducible.")
    startup_trials: int = option(5, "Trials before the pruner prunes (and TPE stops sampling at random).", at_least(0))
    warmup_epochs: int = option(1, "Epochs of a trial before the pruner may stop it.", at_least(0))
    confirm_top: int = option(3, "The best configurations re-trained on `confirm_seeds` and tested.", at_least(0))
    confirm_seeds: tuple[int, ...] = option(
        (), "Seeds of the confirm phase; unset: the 3 seeds after the largest of `study.seeds`.", _optional_seeds
    )

    @property
    def maximize(self) -> bool:
        return (self.direction or ("maximize" if self.objective == "val_accuracy" else "minimize")) == "maximize"


@dataclass(frozen=True)
class SpaceEntry:
    """One searched setting: a float or int range, or a list of choices; searched only when `when` holds."""

    path: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        """Choices as Optuna stores them (strings: a choice may be a whole table)."""
        return tuple(_format_label_value(c) for c in self.choices)

    def applies(self, chosen: dict[str, Any]) -> bool:
        return all(path in chosen and chosen[path] in values for path, values in self.when)


@dataclass(frozen=True)
class SearchSpec:
    settings: SearchSettings
    space: tuple[SpaceEntry, ...]
    seeds: tuple[int, ...]  # the search trains each trial with the first; confirm_seeds are fresh ones
    confirm_seeds: tuple[int, ...]


SEARCH_KEYS = tuple(f.name for f in fields(SearchSettings)) + ("space",)
RANGE_KEYS = ("low", "high", "log", "step", "when")


def _field_type(path: str) -> Any:
    """The schema type of a dotted setting path (any model or schedule kind that has it), or None."""
    head, *rest = path.split(".")
    types_here = [SETTING_TABLES.get(head)]
    for part in rest:
        found = []
        for tp in types_here:
            candidates = list(_kinds_of(tp).values()) if _kinds_of(tp) else [tp]
            for cls in candidates:
                if typing.get_origin(cls) in (types.UnionType, typing.Union):
                    cls = next(a for a in typing.get_args(cls) if a is not type(None))
                if is_dataclass(cls) and part in {f.name for f in fields(cls)}:
                    found.append(typing.get_type_hints(cls)[part])
        if not found:
            return None
        types_here = found
    return types_here[0]


def _parse_space_entry(path: str, raw: Any, earlier: dict[str, SpaceEntry], stage_names: list[str], file: str) -> SpaceEntry:
    shown = f'search.space."{path}"'
    if path != "stage":
        head = path.split(".", 1)[0]
        if head not in SETTING_TABLES or "." not in path:
            raise SpecError(file, shown, 'a searched setting is a quoted path starting with data., train. or model., or "stage"')
    when: tuple = ()
    if isinstance(raw, dict) and "when" in raw:
        when = _parse_when(raw["when"], earlier, f"{shown}.when", file)
        raw = {k: v for k, v in raw.items() if k != "when"}
        if "values" in raw:
            raw = raw["values"]
    if isinstance(raw, list):
        if not raw:
            raise SpecError(file, shown, "must list at least one choice")
        repeated = [v for i, v in enumerate(raw) if v in raw[:i]]
        if repeated:
            raise SpecError(file, shown, f"lists {repeated[0]!r} twice")
        if path == "stage":
            unknown = [v for v in raw if v not in stage_names]
            if unknown:
                raise SpecError(file, shown, f"{unknown[0]!r} is not a stage{did_you_mean(str(unknown[0]), stage_names)}; stages: {', '.join(stage_names)}")
        return SpaceEntry(path, "categorical", choices=tuple(raw), when=when)
    if not isinstance(raw, dict):
        raise SpecError(file, shown, "must be a list of choices or a range table { low = …, high = … }")
    for key in raw:
        if key not in RANGE_KEYS + ("values",):
            raise SpecError(file, f"{shown}.{key}", f"unknown key{did_you_mean(key, RANGE_KEYS)}; a range allows: {', '.join(RANGE_KEYS)}")
    tp = _field_type(path)
    tp = next((a for a in typing.get_args(tp) if a is not type(None)), tp) if typing.get_origin(tp) in (types.UnionType, typing.Union) else tp
    if tp not in (int, float):
        raise SpecError(file, shown, f"a range needs a numeric setting; {path} is {'not a setting' if tp is None else _describe(tp)}")
    for key in ("low", "high"):
        if key not in raw:
            raise SpecError(file, f"{shown}.{key}", "is required")
    ctx = _Context(file)
    low, high = (_coerce(raw[k], tp, ctx, f"{shown}.{k}") for k in ("low", "high"))
    log = _coerce(raw.get("log", False), bool, ctx, f"{shown}.log")
    step = _coerce(raw["step"], tp, ctx, f"{shown}.step") if "step" in raw else None
    if low >= high:
        raise SpecError(file, shown, f"low must be < high (got {low} ≥ {high})")
    if log and low <= 0:
        raise SpecError(file, f"{shown}.low", f"must be > 0 on a log scale (got {low})")
    if step is not None and (step <= 0 or (log and tp is float)):
        raise SpecError(file, f"{shown}.step", "must be > 0, and a float range cannot have both step and log")
    return SpaceEntry(path, "int" if tp is int else "float", low=low, high=high, log=log, step=step, when=when)


def _parse_when(raw: Any, earlier: dict[str, SpaceEntry], shown: str, file: str) -> tuple:
    if not isinstance(raw, dict) or not raw:
        raise SpecError(file, shown, 'must be a table of earlier searched settings and their values, e.g. { "train.schedule" = "step" }')
    conditions = []
    for path, wanted in raw.items():
        if path not in earlier:
            listed = ", ".join(earlier) or "none yet"
            raise SpecError(file, f'{shown}."{path}"',
                            f"a condition must name a setting searched above it{did_you_mean(path, earlier)}; searched so far: {listed}")
        wanted = tuple(wanted) if isinstance(wanted, list) else (wanted,)
        entry = earlier[path]
        for value in wanted:
            ok = value in entry.choices if entry.kind == "categorical" else (
                isinstance(value, int | float) and entry.low <= value <= entry.high)
            if not ok:
                raise SpecError(file, f'{shown}."{path}"', f"{value!r} is not a value {path} can take")
        conditions.append((path, wanted))
    return tuple(conditions)


def _parse_search(raw: dict, info: StudyInfo, sources: list, file: str) -> SearchSpec:
    table = raw["search"]
    if not isinstance(table, dict):
        raise SpecError(file, "search", "must be a table")
    for key in table:
        if key not in SEARCH_KEYS:
            raise SpecError(file, f"search.{key}", f"unknown key{did_you_mean(key, SEARCH_KEYS)}; [search] allows: {', '.join(SEARCH_KEYS)}")
    ctx = _Context(file)
    settings = _build(SearchSettings, _check_table({k: v for k, v in table.items() if k != "space"}, SearchSettings, ctx, "search"), ctx, "search")
    if settings.trials is None and settings.timeout is None:
        raise SpecError(file, "search.trials", "is required (or search.timeout): how long the search runs")
    space_raw = table.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise SpecError(file, "search.space", 'is required: the settings to search, e.g. "train.lr" = { low = 1e-4, high = 1e-2, log = true }')
    names = [s.name for s in sources]
    entries: dict[str, SpaceEntry] = {}
    for path, value in space_raw.items():
        entries[path] = _parse_space_entry(path, value, entries, names, file)
    confirm = settings.confirm_seeds or tuple(range(max(info.seeds) + 1, max(info.seeds) + 4))
    overlap = set(confirm) & set(info.seeds)
    if overlap:
        raise SpecError(file, "search.confirm_seeds", f"must be fresh seeds, not the search's ({sorted(overlap)[0]} is in study.seeds)")
    return SearchSpec(settings, tuple(entries.values()), info.seeds, confirm)


def resolve_point(study: "Study", point: tuple[tuple[str, Any], ...], name: str = "", index: int = 0) -> Stage:
    """A searched configuration as a Stage: the chosen stage's settings with the assignments on top.

    Assignments that mean nothing for the resolved settings (a schedule parameter under another schedule) are
    dropped, as in a grid; the stage keeps only those that took effect in `point`.
    """
    chosen = dict(point)
    sources = {s.name: s for s in study.sources}
    source = sources.get(chosen.pop("stage", None), study.sources[0])
    settings = tuple((p, v) for p, v in point if p != "stage")
    paths = [p for p, _ in settings]

    shown = _axis_origin(paths, "search.space")

    ctx = _Context(study.path, lenient=True)
    layers = [study.top, (source.layer, _written(source.where)), (_axis_layer(settings), shown)]
    data, model, train = _resolve(layers, ctx, source.where or "search", DATASETS[study.info.dataset])
    dropped = {_owning_axis(d, paths) for d, _ in ctx.dropped}
    live = tuple((p, v) for p, v in point if p not in dropped)
    def short(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else _format_label_value(value)

    label = name or (" ".join(f"{p.rsplit('.', 1)[-1]}={short(v)}" for p, v in live) or "base")
    return Stage(name=label, description=source.description, reference=None, index=index, data=data, model=model,
                 train=train, compare_to=0, point=live, source=source.where)


def _check_space_resolves(study: "Study") -> None:
    """Every choice and both ends of every range must make valid settings (with their conditions met)."""
    for entry in study.search.space:
        values = entry.choices if entry.kind == "categorical" else (entry.low, entry.high)
        for value in values:
            point = tuple((p, vals[0]) for p, vals in entry.when) + ((entry.path, value),)
            try:
                stage = resolve_point(study, point)
            except SpecError as exc:
                raise SpecError(study.path, f'search.space."{entry.path}"', f"{value!r}: {exc.message}") from None
            if entry.path != "stage" and entry.path not in dict(stage.point):
                raise SpecError(study.path, f'search.space."{entry.path}"',
                                f"{value!r} has no effect on the settings; add a `when` condition or check the path")


# ---------------------------------------------------------------------------- study


def _syntax_error(exc: tomllib.TOMLDecodeError, file: str) -> SpecError:
    """Put tomllib's '(at line L, column C)' where editors look for it: file:L:C."""
    text = str(exc)
    found = re.search(r"\(at line (\d+), column (\d+)\)", text)
    if found:
        message = text[: found.start()].strip()
        return SpecError(f"{file}:{found.group(1)}:{found.group(2)}", "", f"TOML syntax error: {message}")
    return SpecError(file, "", f"TOML syntax error: {text}")


def parse_study(text: str, file: str = "<study>") -> Study:
    """Validate a study given as TOML text; raises SpecError naming the key path."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, file) from None
    for key in raw:
        if key not in TOP_KEYS:
            raise SpecError(file, key, f"unknown section{did_you_mean(key, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    if "study" not in raw:
        raise SpecError(file, "study", "is required: a [study] table with at least `name`")
    info = _build(StudyInfo, _check_table(raw["study"], StudyInfo, _Context(file), "study"), _Context(file), "study")
    execution = _coerce(raw.get("execution", {}), ExecutionSettings, _Context(file), "execution")
    top: Layer = ({key: raw[key] for key in SETTING_TABLES if key in raw}, _written(""))
    sources = _arm_sources(raw, info, file)
    dataset = DATASETS[info.dataset]
    if info.design == "search":
        study = Study(info=info, stages=(), path=file, text=text, execution=execution,
                      search=_parse_search(raw, info, sources, file), top=top, sources=tuple(sources))
        _check_space_resolves(study)
        return study
    if info.design == "grid":
        grid = _parse_grid(raw, file)
        stages, excluded = _expand_grid(grid, sources, top, info, file)
        _check_baseline(info, stages, file)
        return Study(info=info, stages=tuple(stages), path=file, text=text,
                     axes=tuple(p for p, _ in grid.axes), excluded=excluded, execution=execution)
    stages: list[Stage] = []
    for index, source in enumerate(sources):
        ctx = _Context(file)
        data, model, train = _resolve([top, (source.layer, _written(source.where))], ctx, source.where or "baseline", dataset)
        compare_to = (index - 1 if info.design == "ladder" else 0) if index else None
        stages.append(Stage(name=source.name, description=source.description, reference=source.reference,
                            index=index, data=data, model=model, train=train, compare_to=compare_to,
                            source=source.where))
    _check_baseline(info, stages, file)
    return Study(info=info, stages=tuple(stages), path=file, text=text, execution=execution)


def _check_baseline(info: StudyInfo, stages: list[Stage], file: str) -> None:
    names = [s.name for s in stages]
    if info.baseline is not None and info.baseline not in names:
        what = "a grid point's name (see `ablate plan`)" if info.design == "grid" else "a stage's name"
        raise SpecError(file, "study.baseline", f"{info.baseline!r} is not {what}{did_you_mean(info.baseline, names)}; "
                        f"one of: {', '.join(names[:8])}{' …' if len(names) > 8 else ''}")


def load_study(path: str | Path) -> Study:
    """Read and validate a study file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), "", "no such study file") from None
    except IsADirectoryError:
        raise SpecError(str(path), "", "is a directory, not a study file") from None
    except UnicodeDecodeError:
        raise SpecError(str(path), "", "is not UTF-8 text (TOML files must be UTF-8)") from None
    return parse_study(text, str(path))


# ---------------------------------------------------------------------------- documentation


def schema_rows(cls: type) -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) rows for the README and `ablate schema`."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in fields(cls):
        if f.default is not MISSING:
            default = _toml_literal(f.default)
        else:
            default = "required" if f.default_factory is MISSING else _toml_literal(f.default_factory())
        rows.append((f.name, _describe(hints[f.name]), default, f.metadata.get("doc", "")))
    return rows


def _toml_literal(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_literal(v)}" for k, v in value.items()) + "}"
    if is_dataclass(value):  # a default table: its kind name, or {} when every key takes its own default
        return f'"{value.kind}"' if hasattr(value, "kind") else "{}"
    return repr(value)


def schema_tables() -> dict[str, type]:
    """Every documented table, in the order a study file reads."""
    tables: dict[str, type] = {"[study]": StudyInfo, "[data]": DataSettings, "[train]": TrainSettings}
    for kind, cls in SCHEDULE_KINDS.items():
        tables[f'train.schedule kind = "{kind}"'] = cls
    tables["train.early_stopping"] = EarlyStopping
    tables["train.augment"] = Augment
    for kind, cls in MODEL_KINDS.items():
        tables[f'[model] kind = "{kind}"'] = cls
    tables['[model] kind = "cnn": each entry of `blocks`'] = ConvBlock
    tables["[execution]"] = ExecutionSettings
    tables["[search]"] = SearchSettings
    return tables


def schema_markdown() -> str:
    """The reference tables of README.md's spec section (a test keeps the two equal)."""
    parts = []
    for title, cls in schema_tables().items():
        parts += [f"`{title}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, kind, default, doc in schema_rows(cls):
            parts.append(f"| `{key}` | {kind} | `{default}` | {doc} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"
