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
    return field(default=default, metadata={"doc": doc, "check": check})


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
    design: Literal["ladder"] = option(
        "ladder", "How stages and seeds become trials. `ladder`: stages in order, each compared with the first."
    )
    seeds: tuple[int, ...] = option((0,), "Seeds every stage runs with (paired across stages).", unique_ints)
    description: str = option("", "Free text shown in reports.")


@dataclass(frozen=True)
class DataSettings:
    val_size: int = option(5000, "Validation examples split from the training set.", at_least(1))
    split_seed: int = option(0, "Seed of the train/validation split; the same split for every trial.")
    train_limit: int | None = option(None, "Use only this many training examples (smoke tests).", at_least(1))
    test_limit: int | None = option(None, "Evaluate on only this many test examples (smoke tests).", at_least(1))


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


MODEL_KINDS: dict[str, type] = {"linear": LinearModel, "mlp": MLPModel, "cnn": CNNModel}
ModelSpec = LinearModel | MLPModel | CNNModel

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
class Stage:
    name: str
    description: str
    reference: float | None  # a published test accuracy (%) to set beside ours; not a setting
    index: int
    data: DataSettings
    model: ModelSpec
    train: TrainSettings

    def settings(self, dataset: str, seed: int) -> TrialSettings:
        return TrialSettings(dataset=dataset, seed=seed, data=self.data, model=self.model, train=self.train)


@dataclass(frozen=True)
class Study:
    info: StudyInfo
    stages: tuple[Stage, ...]
    path: str
    text: str = field(repr=False)

    @property
    def name(self) -> str:
        return self.info.name


# ---------------------------------------------------------------------------- validation


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(tp: Any) -> str:
    """How a type reads in an error message."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return "a list of tables" if is_dataclass(item) else f"a list of {_PLURAL.get(item, 'values')}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _coerce(value: Any, tp: Any, file: str, path: str) -> Any:
    """Check a TOML value against a type hint; return it in canonical form (ints as floats, lists as tuples)."""
    origin = typing.get_origin(tp)
    wrong = SpecError(file, path, f"must be {_describe(tp)}, not {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
            raise SpecError(file, path, f"{value!r} is not allowed{hint}; allowed: {', '.join(map(repr, allowed))}")
        return value
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner, file, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise wrong
        item = typing.get_args(tp)[0]
        return tuple(_coerce(v, item, file, f"{path}[{i + 1}]") for i, v in enumerate(value))
    if is_dataclass(tp):
        return _build(tp, _check_table(value, tp, file, path), file, path)
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
    if tp is str:
        if not isinstance(value, str):
            raise wrong
        return value
    raise TypeError(f"schema type {tp!r} is not supported")


def _check_table(raw: Any, cls: type, file: str, path: str, what: str = "") -> dict[str, Any]:
    """Validate the keys present in one TOML table against a schema class (missing keys allowed)."""
    if not isinstance(raw, dict):
        raise SpecError(file, path, f"must be a table, not {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = _join(path, key)
        if key not in known:
            owner = what or (f"[{path}]" if path else "the top level")
            raise SpecError(
                file,
                key_path,
                f"unknown key{did_you_mean(key, known)}; {owner} allows: {', '.join(known)}",
            )
        coerced = _coerce(value, hints[key], file, key_path)
        check = known[key].metadata.get("check")
        problem = check(coerced) if check else None
        if problem:
            raise SpecError(file, key_path, f"{problem} (got {value!r})")
        out[key] = coerced
    return out


def _build(cls: type, values: dict[str, Any], file: str, path: str) -> Any:
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in values]
    if missing:
        raise SpecError(file, _join(path, missing[0]), "is required")
    return cls(**values)


def _model_kind(raw: Any, file: str, path: str) -> str | None:
    if not isinstance(raw, dict):
        raise SpecError(file, path, f"must be a table, not {raw!r}")
    kind = raw.get("kind")
    if kind is None:
        return None
    allowed = tuple(MODEL_KINDS)
    if kind not in allowed:
        raise SpecError(
            file,
            _join(path, "kind"),
            f"unknown model kind {kind!r}{did_you_mean(str(kind), allowed)}; allowed: {', '.join(allowed)}",
        )
    return kind


def _resolve_model(default: dict, override: dict, file: str, path: str) -> ModelSpec:
    """Stage model over the [model] defaults; a stage naming another kind starts from scratch."""
    default_kind = _model_kind(default, file, "model")
    kind = _model_kind(override, file, path) or default_kind
    if kind is None:
        raise SpecError(file, _join(path, "kind"), f"is required (in [model] or the stage); allowed: {', '.join(MODEL_KINDS)}")
    cls = MODEL_KINDS[kind]
    merged: dict[str, Any] = {}
    if kind == default_kind:
        merged.update(_check_table(default, cls, file, "model", f"model kind '{kind}'"))
    merged.update(_check_table(override, cls, file, path, f"model kind '{kind}'"))
    model = _build(cls, merged, file, path)
    return model.resolved() if isinstance(model, CNNModel) else model


def _check_limits(dataset: DatasetInfo, data: DataSettings, file: str, where: Callable[[str], str]) -> None:
    """Checks that span keys; `where` names the table a key was set in ([data] or the stage's)."""
    if data.val_size >= dataset.train_size:
        raise SpecError(file, where("val_size"), f"must be < {dataset.train_size}, the training set's size")
    room = dataset.train_size - data.val_size
    if data.train_limit is not None and data.train_limit > room:
        raise SpecError(file, where("train_limit"), f"must be ≤ {room} (training set minus validation)")
    if data.test_limit is not None and data.test_limit > dataset.test_size:
        raise SpecError(file, where("test_limit"), f"must be ≤ {dataset.test_size}, the test set's size")


def _check_optimizer(train: TrainSettings, file: str, where: Callable[[str], str]) -> None:
    """Settings that only mean something for SGD are contradictions with another optimiser."""
    if train.optimizer != "sgd":
        for key, off in (("momentum", 0.0), ("nesterov", False)):
            if getattr(train, key) != off:
                raise SpecError(file, where(key), f"applies only to optimizer 'sgd' (optimizer is '{train.optimizer}')")
    elif train.nesterov and train.momentum == 0:
        raise SpecError(file, where("nesterov"), "needs momentum > 0 (as torch.optim.SGD does)")


STAGE_KEYS = ("name", "description", "reference", "model", "data", "train")
TOP_KEYS = ("study", "data", "train", "model", "stage")


def _parse_stage(raw: Any, index: int, defaults: dict[str, dict], info: StudyInfo, file: str) -> Stage:
    path = f"stage[{index + 1}]"
    if not isinstance(raw, dict):
        raise SpecError(file, path, "must be a table ([[stage]])")
    for key in raw:
        if key not in STAGE_KEYS:
            raise SpecError(
                file, _join(path, key), f"unknown key{did_you_mean(key, STAGE_KEYS)}; a stage allows: {', '.join(STAGE_KEYS)}"
            )
    name = raw.get("name")
    if name is None:
        raise SpecError(file, _join(path, "name"), "is required: every stage needs a name")
    if not isinstance(name, str) or identifier(name):
        raise SpecError(file, _join(path, "name"), f"{identifier(str(name))} (got {name!r})")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise SpecError(file, _join(path, "description"), f"must be a string, not {description!r}")
    reference = raw.get("reference")
    if reference is not None:
        reference = _coerce(reference, float, file, _join(path, "reference"))
        if not 0.0 <= reference <= 100.0:
            raise SpecError(file, _join(path, "reference"), f"is a test accuracy in percent, in [0, 100] (got {reference})")
    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        override = _check_table(raw.get(section, {}), cls, file, _join(path, section))
        built[section] = cls(**{**defaults[section], **override})
    def where(section: str) -> Callable[[str], str]:
        """The key path of a setting: the stage's table when the stage sets it, else the top-level one."""
        overrides = raw.get(section, {})
        return lambda key: f"{path}.{section}.{key}" if key in overrides else f"{section}.{key}"

    _check_optimizer(built["train"], file, where("train"))
    _check_limits(DATASETS[info.dataset], built["data"], file, where("data"))
    model = _resolve_model(defaults["model"], raw.get("model", {}), file, _join(path, "model"))
    return Stage(name=name, description=description, reference=reference, index=index, model=model, **built)


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
    info = _build(StudyInfo, _check_table(raw["study"], StudyInfo, file, "study"), file, "study")
    defaults = {section: _check_table(raw.get(section, {}), cls, file, section) for section, cls in SECTIONS.items()}
    defaults["model"] = raw.get("model", {})
    stages_raw = raw.get("stage")
    if not stages_raw:
        raise SpecError(file, "stage", "is required: at least one [[stage]] table")
    if not isinstance(stages_raw, list):
        raise SpecError(file, "stage", "must be an array of tables: write [[stage]], not [stage]")
    stages = tuple(_parse_stage(s, i, defaults, info, file) for i, s in enumerate(stages_raw))
    seen: dict[str, int] = {}
    for stage in stages:
        if stage.name in seen:
            raise SpecError(file, f"stage[{stage.index + 1}].name", f"'{stage.name}' is already the name of stage[{seen[stage.name] + 1}]")
        seen[stage.name] = stage.index
    return Study(info=info, stages=stages, path=file, text=text)


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
        default = "required" if f.default is MISSING else _toml_literal(f.default)
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
    return repr(value)


def schema_tables() -> dict[str, type]:
    """Every documented table, in the order a study file reads."""
    tables: dict[str, type] = {"[study]": StudyInfo, "[data]": DataSettings, "[train]": TrainSettings}
    for kind, cls in MODEL_KINDS.items():
        tables[f'[model] kind = "{kind}"'] = cls
    tables['[model] kind = "cnn": each entry of `blocks`'] = ConvBlock
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
