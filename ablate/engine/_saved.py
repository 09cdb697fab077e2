"""A trained network as ablate saves it: the images as the dataset stores them in, class scores out.

Training normalises each batch outside the network (DeviceData.normalise); a saved model carries
that step inside, with the very numbers and operations training used, so that whoever loads it
feeds it raw images (uint8 0–255 for image files, floats for float datasets) and gets the scores
the trial's test pass got — bit for bit on the same device.

The MLflow model of a saved model is `Served`: the Classifier behind a check of its input. Served
over HTTP (`mlflow models serve`), a model gets JSON numbers, which carry no dtype: MLflow casts
them to its signature's, and a uint8 signature turns images scaled to [0, 1] into zeros (or wraps
them around) without a word, so the model answers garbage. Its signature therefore takes float32
and the check refuses, with a message that says what to send, what it would misread: for a
dataset of uint8 images, values outside 0–255, fractions, or an image all within [0, 1] (scaled
images, which a uint8 image is not unless black); for a float dataset whose images lie within
[0, 1], values outside it (0–255 images); NaN and infinities always. Its scores are the
Classifier's: uint8 pixel values are exact in float32.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ablate.datasets import DeviceData


class Classifier(nn.Module):
    """`net` behind the dataset's normalisation. A one-channel dataset's mean and std are plain numbers, as in
    training (a tensor there would run another kernel, one ulp away in some pixels); per-channel ones are buffers.
    A network trained channels-last (ablate.engine's layout) gets its batches so, as its test pass did."""

    def __init__(self, net: nn.Module, mean: torch.Tensor | float, std: torch.Tensor | float,
                 channels_last: bool = False):
        super().__init__()
        self.net = net
        self.channels_last = channels_last
        if isinstance(mean, torch.Tensor):
            self.register_buffer("mean", mean.detach().clone())
            self.register_buffer("std", std.detach().clone())
        else:
            self.mean, self.std = float(mean), float(std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        return self.net(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)


class Served(nn.Module):
    """`classifier` for whoever serves it with MLflow (see the module docstring): float32 images in, the classifier's
    scores out, and an error naming what to send for any input it would misread. `low`, `high`: the pixel values it
    takes (infinite: any finite value); `whole`: only whole numbers (a uint8 dataset's, 0–255)."""

    def __init__(self, classifier: Classifier, low: float, high: float, whole: bool):
        super().__init__()
        self.classifier, self.low, self.high, self.whole = classifier, float(low), float(high), whole
        if whole:
            expected = ("pixel values 0-255 (the numbers a uint8 image holds; images scaled to [0, 1] must be "
                        "multiplied by 255)")
        elif math.isinf(low) and math.isinf(high):
            expected = "float images as its dataset holds them (finite values)"
        else:
            expected = f"float images with values within [{low:g}, {high:g}], as its dataset holds them"
        self._messages = (f"this model takes {expected}; got a value outside [{low:g}, {high:g}], NaN or infinity",
                          f"this model takes {expected}; got fractional values",
                          f"this model takes {expected}; got an image whose values all lie within [0, 1]")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Asserted in the graph: torch.export keeps _assert_async, where a data-dependent Python `if` cannot be traced.
        out_of_range, fractional, unit = self._messages
        torch._assert_async((torch.isfinite(images) & (images >= self.low) & (images <= self.high)).all(),
                            out_of_range)
        if self.whole:
            torch._assert_async((images == images.round()).all(), fractional)
            flat = images.flatten(1)  # per image: a black one (all 0) passes, one all within [0, 1] but not all 0 fails
            torch._assert_async(((flat > 1).any(1) | (flat == 0).all(1)).all(), unit)
        return self.classifier(images)


def servable(classifier: Classifier, data: DeviceData) -> Served:
    """The Classifier as MLflow serves it (Served), for `data`'s images: a uint8 dataset's take whole numbers 0–255; a
    float dataset's, values within [0, 1] where its training images lie there, else any finite value."""
    images = data.train.images
    if images.dtype == torch.uint8:
        return Served(classifier, 0, 255, whole=True).eval()
    unit = bool(images.numel()) and 0 <= float(images.min()) and float(images.max()) <= 1
    return Served(classifier, *((0.0, 1.0) if unit else (-math.inf, math.inf)), whole=False).eval()


def deployable(net: nn.Module, data: DeviceData, channels_last: bool = False) -> Classifier:
    """A CPU copy of a trained network, in eval mode, behind `data`'s normalisation (the network is not changed)."""
    mean = data.mean.cpu() if isinstance(data.mean, torch.Tensor) else data.mean
    std = data.std.cpu() if isinstance(data.std, torch.Tensor) else data.std
    # The weights themselves contiguous: torch.export's archive mishandles channels-last ones ("No complete tensor
    # found in the group"), and oneDNN, which lays weights out its own way, computes the same scores from either.
    plain = copy.deepcopy(net).cpu().to(memory_format=torch.contiguous_format)
    return Classifier(plain, mean, std, channels_last).eval()
