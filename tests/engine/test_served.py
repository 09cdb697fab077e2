"""The MLflow model's network (ablate.engine's Served): float32 pixel values in, the Classifier's very scores out, and
an error that says what to send for an input it would misread — kept through torch.export, as MLflow saves it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ablate.datasets import DeviceData, Split
from ablate.engine import Classifier, Served, servable

TAKES_PIXELS = "this model takes pixel values 0-255"


def _classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), 33.3, 78.5).eval()


def _images(n: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def _data(images: torch.Tensor) -> DeviceData:
    split = Split(images, torch.zeros(len(images), dtype=torch.long))
    return DeviceData(train=split, val=split, test=split, mean=0.0, std=1.0)


def _refusal(model: nn.Module, images: torch.Tensor) -> str:
    with pytest.raises(RuntimeError) as raised:
        model(images)
    return str(raised.value)


@pytest.fixture(scope="module")
def exported():
    """Served around a small Classifier as MLflow saves it: a torch.export program, any batch size."""
    served = Served(_classifier(), 0, 255, whole=True).eval()
    program = torch.export.export(served, (_images().float(),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    return program.module()


@pytest.mark.parametrize("how", ["eager", "exported"])
def test_pixel_values_as_floats_get_the_classifiers_own_scores(exported, how):
    classifier = _classifier()
    model = Served(classifier, 0, 255, whole=True).eval() if how == "eager" else exported
    images = _images(5)
    with torch.inference_mode():
        assert torch.equal(model(images.float()), classifier(images))  # uint8 values are exact in float32
        assert model(torch.zeros(1, 1, 4, 4)).shape == (1, 3)  # a black image is an image


@pytest.mark.parametrize("how", ["eager", "exported"])
def test_what_it_would_misread_is_refused_saying_what_to_send(exported, how):
    model = Served(_classifier(), 0, 255, whole=True).eval() if how == "eager" else exported
    images = _images().float()
    scaled = _refusal(model, images / 255)
    assert TAKES_PIXELS in scaled and "multiplied by 255" in scaled and "fractional" in scaled
    assert "all lie within [0, 1]" in _refusal(model, (images > 127).float())  # a scaled black-and-white image
    assert "outside [0, 255]" in _refusal(model, images * 2)
    assert "outside [0, 255]" in _refusal(model, torch.full_like(images, -1.0))
    assert "NaN" in _refusal(model, images * math.nan)


def test_a_float_datasets_model_takes_its_own_range():
    """Float images within [0, 1] (a factory's): values outside it are refused (images sent as 0-255); a float dataset
    beyond [0, 1] takes any finite value."""
    classifier = _classifier()
    unit = servable(classifier, _data(_images().float() / 255))
    assert (unit.low, unit.high, unit.whole) == (0.0, 1.0, False)
    with torch.inference_mode():
        assert torch.equal(unit(_images().float() / 255), classifier(_images().float() / 255))
    assert "within [0, 1]" in _refusal(unit, _images().float())
    wide = servable(classifier, _data(_images().float() - 128))
    assert math.isinf(wide.low) and math.isinf(wide.high)
    with torch.inference_mode():
        wide(_images().float() * 10)
    assert "NaN or infinity" in _refusal(wide, _images().float() * math.inf)
    assert servable(classifier, _data(_images())).whole  # a uint8 dataset's: whole numbers 0-255
