"""Memory layout of a convolutional network's activations: channels-last on the CPU.

On the CPU, oneDNN's NHWC (channels-last) kernels train the small CNNs of these studies
faster than the default NCHW ones: convolutions and their backward passes, and max pooling
most of all (measured by `python benchmarks/bench.py --sections conv`; results/benchmarks.md).
A layout changes how values lie in memory, not which values are computed: sums run in
another order, so metrics move by float rounding only (tests/engine/test_layout.py), and
dropout masks do not move at all (ablate.models' Dropout draws them in the logical order).

Only the built-in convolutional kinds (`cnn`, `resnet`) switch: a custom model's own layers (its
dropout above all) are not known to keep their numbers under another layout. GPUs keep the default layout, whose
numbers ablate's GPU results were measured with.
"""

from __future__ import annotations

import torch

CHANNELS_LAST_KINDS = ("cnn", "resnet")


def conv_layout(model_kind: str, device: torch.device) -> torch.memory_format:
    """The memory format a trial's network and batches use."""
    if device.type == "cpu" and model_kind in CHANNELS_LAST_KINDS:
        return torch.channels_last
    return torch.contiguous_format


def in_layout(images: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """A 4-D batch in `layout` (a no-op when it already is, or for other shapes)."""
    return images.contiguous(memory_format=layout) if images.dim() == 4 else images
