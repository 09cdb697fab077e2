"""A trained network as ablate saves it: the images as the dataset stores them in, class scores out.

Training normalises each batch outside the network (DeviceData.normalise); a saved model carries
that step inside, with the very numbers and operations training used, so that whoever loads it
feeds it raw images (uint8 0–255 for image files, floats for float datasets) and gets the scores
the trial's test pass got — bit for bit on the same device.
"""

from __future__ import annotations

import copy

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


def deployable(net: nn.Module, data: DeviceData, channels_last: bool = False) -> Classifier:
    """A CPU copy of a trained network, in eval mode, behind `data`'s normalisation (the network is not changed)."""
    mean = data.mean.cpu() if isinstance(data.mean, torch.Tensor) else data.mean
    std = data.std.cpu() if isinstance(data.std, torch.Tensor) else data.std
    # The weights themselves contiguous: torch.export's archive mishandles channels-last ones ("No complete tensor
    # found in the group"), and oneDNN, which lays weights out its own way, computes the same scores from either.
    plain = copy.deepcopy(net).cpu().to(memory_format=torch.contiguous_format)
    return Classifier(plain, mean, std, channels_last).eval()
