"""kind = "torchvision": a classification network torchvision builds, randomly initialised, fitted to the data.

The network is torchvision's own (`torchvision.models.get_model(name, weights=None, ...)`: never a download), with
two changes so that it takes the dataset: `num_classes` is the dataset's classes, and where the dataset's images do
not have 3 channels, the first convolution is replaced by one taking their channels, with the original's other
hyper-parameters (out channels, kernel, stride, padding, dilation, groups, bias) and PyTorch's default
initialisation, as a researcher writing `model.conv1 = nn.Conv2d(1, 64, ...)` gets. The stem is not changed for
small images: resnet18 on 28×28 MNIST runs as torchvision builds it (its last stage sees 1×1 feature maps); a
network the images are too small for is refused, with the smallest size it takes.

Sizes come from one trial of the network on torch's meta device (no memory, no compute), as a custom model's do:
its parameters, its multiply-accumulates (torch's FlopCounterMode: convolutions and matrix products, attention's
included; like the built-in kinds, nothing else), and whether a batch of the dataset's images gives class scores.
A RegNet, whose builder reads back tensors it makes, is built on the CPU first, then moved to the meta device.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ablate.datasets import Dataset
from ablate.errors import did_you_mean
from ablate.fields import option
from ablate.models._kind import ModelError, ModelKind

if TYPE_CHECKING:
    from torch import nn

# What ablate sets itself: the classes come from the dataset, and the weights are never downloaded.
_OWN_ARGUMENTS = {"num_classes": "the dataset's number of classes", "weights": "None (randomly initialised)"}
# Networks whose training forward would return auxiliary outputs besides the class scores: ablate trains on the
# scores alone, so their auxiliary heads are off (and their own initialisation chosen, which silences a warning).
_DEFAULTS = {name: {"aux_logits": False, "init_weights": True} for name in ("googlenet", "inception_v3")}
# The other families torchvision builds, each named in the refusal of one of its models.
_OTHER_TASKS = {"detection": "an object detection", "segmentation": "a semantic segmentation",
                "video": "a video classification", "optical_flow": "an optical flow",
                "quantization": "a quantized (inference-only)"}
_LARGEST_TRIED = 1024  # the largest square image a too-small input is tried at, to name the size a network needs


@dataclass(frozen=True, kw_only=True)
class TorchvisionModel:
    """Every key besides `kind` and `name` is passed to torchvision's builder as a keyword argument."""

    kind: Literal["torchvision"] = option(
        "torchvision",
        "A classification network torchvision builds, randomly initialised (never downloaded weights); its classes "
        "are the dataset's and, for images of other than 3 channels, its first convolution takes theirs.",
    )
    name: str = option(
        doc="A classification model of torchvision.models, e.g. `resnet18`, `mobilenet_v3_small`, `efficientnet_b0` "
        "(the list: `torchvision.models.list_models(module=torchvision.models)`).",
    )
    kwargs: dict = option(
        {}, "Keyword arguments of torchvision's builder, e.g. `dropout = 0.3` for efficientnet_b0; any other key of "
        "the table lands here."
    )

    EXTRA_KEYS = "kwargs"  # where validation puts keys the schema does not name


def _builder_arguments(spec: TorchvisionModel, classes: int) -> dict:
    for key, value in _OWN_ARGUMENTS.items():
        if key in spec.kwargs:
            raise ModelError(f"'{key}' is set by ablate: {value}; remove it", key="kwargs")
    return {**_DEFAULTS.get(spec.name, {}), **spec.kwargs, "weights": None, "num_classes": classes}


def _check_name(name: str) -> None:
    """A classification model of torchvision.models; one line naming what the name is otherwise."""
    import torchvision

    classification = torchvision.models.list_models(module=torchvision.models)
    if name in classification:
        return
    for module, task in _OTHER_TASKS.items():
        if name in torchvision.models.list_models(module=getattr(torchvision.models, module)):
            raise ModelError(f"'{name}' is {task} model of torchvision; ablate trains image classifiers: name a "
                             "classification model of torchvision.models (e.g. resnet18)", key="name")
    raise ModelError(f"torchvision has no classification model '{name}'{did_you_mean(name, classification)}; the "
                     "names: torchvision.models.list_models(module=torchvision.models)", key="name")


def _build(spec: TorchvisionModel, data: Dataset) -> nn.Module:
    """The network, on the current device: torchvision's, its head for the classes, its first conv for the
    channels. A keyword argument the builder refuses is the `kwargs` key's error."""
    import torchvision

    _check_name(spec.name)
    arguments = _builder_arguments(spec, data.classes)
    try:
        model = torchvision.models.get_model(spec.name, **arguments)
    except TypeError as exc:
        raise ModelError(_refused_arguments(spec, exc), key="kwargs") from None
    except Exception as exc:  # noqa: BLE001 — a value the builder checks, e.g. a dropout outside [0, 1]
        raise ModelError(f"torchvision's {spec.name} refuses its arguments: {exc}", key="kwargs") from None
    _fit_first_conv(model, data.shape[0])
    return model


def _refused_arguments(spec: TorchvisionModel, exc: TypeError) -> str:
    """One line for an argument the builder does not take, naming the class whose arguments it takes."""

    fixed = re.search(r"multiple values for (?:keyword )?argument '(\w+)'", str(exc))
    if fixed:
        return f"torchvision's {spec.name} sets '{fixed[1]}' itself (it defines the network); remove it"
    network = _network_class(spec.name)
    accepted = _settable(network) if network is not None else []
    unknown = [key for key in spec.kwargs if key not in accepted]
    if accepted and len(unknown) == 1:
        return (f"torchvision's {spec.name} takes no argument '{unknown[0]}'{did_you_mean(unknown[0], accepted)}; "
                f"it takes those of torchvision.models.{network.__name__} ({', '.join(accepted)})")
    return f"torchvision's {spec.name} refuses its arguments: {exc}"


def _network_class(name: str) -> type | None:
    """The class torchvision's builder returns (its return annotation), whose arguments the builder passes on."""
    import torchvision

    network = inspect.signature(torchvision.models.get_model_builder(name)).return_annotation
    return network if inspect.isclass(network) else None


def _settable(network: type) -> list[str]:
    """The arguments of a network's class a study file can write: not the classes (ablate's), nor the layers,
    blocks and configurations its builder passes (objects a TOML value cannot be)."""
    objects = ("Callable", "Module", "Config", "Type[", "type[", "Block", "Bottleneck")
    return [name for name, p in inspect.signature(network).parameters.items()
            if name != "num_classes" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and not any(word in str(p.annotation) for word in objects)]


def _fit_first_conv(model: nn.Module, channels: int) -> None:
    """The first convolution replaced by one taking `channels` (the same in every other respect), where it takes
    another number."""
    from torch import nn

    path, conv = next(((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or conv.in_channels == channels:
        return
    replacement = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                            dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                            padding_mode=conv.padding_mode)
    parent_path, _, attribute = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attribute, replacement)


@dataclass(frozen=True)
class _Size:
    params: int
    macs: int


def _size(spec: TorchvisionModel, data: Dataset) -> _Size:
    return _meta_size(spec.name, json.dumps(spec.kwargs, sort_keys=True), data.shape, data.classes)


@functools.lru_cache(maxsize=64)
def _meta_size(name: str, kwargs: str, shape: tuple[int, int, int], classes: int) -> _Size:
    """Parameters and multiply-accumulates per image of the network, from one training-mode forward pass of two
    images on the meta device; a network the images do not fit is refused, with the size it needs if one fits."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ablate.models._torch import count_params

    spec = TorchvisionModel(name=name, kwargs=json.loads(kwargs))
    data = _Shape(shape, classes)
    model = None
    try:
        with torch.device("meta"):
            model = _build(spec, data)  # type: ignore[arg-type]
    except ModelError:
        pass  # a builder that reads back tensors it makes (RegNet's widths): built for real below, then moved
    if model is None:  # not inside the handler, where Python 3.11 reports a call's "multiple values" as a KeyError
        model = _build(spec, data).to("meta")  # type: ignore[arg-type] — where the arguments are wrong, this says so
    with torch.device("meta"):
        try:
            with FlopCounterMode(display=False) as counter:
                scores = model(torch.empty(2, *shape))
        except Exception as exc:  # noqa: BLE001 — torch's or torchvision's own check of the input's size
            raise ModelError(_too_small(model, name, shape, exc), key="name") from None
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (2, classes):
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ModelError(f"torchvision's {name} maps a batch of shape (N, {', '.join(map(str, shape))}) to {got}; "
                         f"ablate trains on (N, {classes}) class scores alone: turn its auxiliary outputs off",
                         key="kwargs")
    return _Size(count_params(model), counter.get_total_flops() // 4)  # two images; a MAC is two flops


@dataclass(frozen=True)
class _Shape:
    """The part of a Dataset that building a network reads (lru_cache keys cannot hold a whole Dataset)."""

    shape: tuple[int, int, int]
    classes: int


def _too_small(model: nn.Module, name: str, shape: tuple[int, int, int], exc: Exception) -> str:
    """Why a batch of the dataset's images does not go through: the smallest square size that does, found by
    trials on the meta device (sizes that work above one that fails: the stem's strides only shrink), or, where
    none up to _LARGEST_TRIED does (a network built for one size), torch's or torchvision's own words."""
    import torch

    channels, height, width = shape

    def fits(side: int) -> bool:
        try:
            model(torch.empty(2, channels, max(height, side), max(width, side)))
            return True
        except Exception:  # noqa: BLE001 — still too small
            return False

    low, high = max(height, width), _LARGEST_TRIED
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not fits(high):
        network = _network_class(name)
        sizes = [key for key in ("image_size", "input_size") if network is not None and key in _settable(network)]
        hint = f" (its argument {sizes[0]} sets the size it takes)" if sizes else ""
        return f"torchvision's {name} does not take {height}×{width} images{hint}: {first}"
    while high - low > 1:  # fits(high), not fits(low)
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return (f"torchvision's {name} needs images of at least {high}×{high} (its strides and pools shrink smaller "
            f"ones to nothing); the dataset's are {height}×{width}: choose a network that takes them")


class Torchvision(ModelKind[TorchvisionModel]):
    name, spec = "torchvision", TorchvisionModel
    packable = False  # its layers are torchvision's: ablate cannot stack them
    layout = ("name", "kwargs")

    def params(self, spec: TorchvisionModel, data: Dataset) -> int:
        return _size(spec, data).params

    def macs(self, spec: TorchvisionModel, data: Dataset) -> int:
        return _size(spec, data).macs

    def describe(self, spec: TorchvisionModel, data: Dataset) -> str:
        kwargs = ", ".join(f"{k}={v!r}" for k, v in spec.kwargs.items())
        return f"torchvision {spec.name}({kwargs})" if kwargs else f"torchvision {spec.name}"

    def build(self, spec: TorchvisionModel, data: Dataset):
        return _build(spec, data)
