"""Dropout from a counter-based stream: a trial's mask is a function of its seed, the layer, the step and the element.

torch's CPU dropout draws its mask from one Mersenne Twister, serially, about 2 ns an element: system C's model 2
spent 30% of its steps there. Here every mask bit is computed, all at once, from a key and the element's index:

- the key of a mask: SplitMix64's mixer over the trial's seed, the layer's site (the index of the layer the
  dropout follows, so a packed network's layer and its trials' single-run layers agree) and the step (the
  layer's how-many-th training pass);
- the words of a mask: the SplitMix64 stream seeded with the key (word j = mix(key + (j + 1)·γ): Steele, Lea and
  Flood's generator, which passes BigCrush), computed with vectorised 64-bit integer ops;
- each word holds four 16-bit lanes, one an element: an element is kept when its lane, read as an unsigned number,
  is below round(keep · 65536) — the keep probability to the nearest 1/65536 — and a kept one is scaled by
  65536 / that threshold, so that the expected output is the input exactly;
- element i of the mask is lane i of the words, i counted in channels-last order — (sample, rows, columns,
  channel), the channel fastest; row-major for a flat (batch, features) input — so a channels-last network's
  mask lies in memory in the order it is computed, and the same element gets the same bit however the tensor
  is laid out.

So a mask depends on nothing but (seed, site, step, element): not on the memory layout, the worker, or the trials
packed beside it (ablate.engine's packed network draws each trial's slice with the trial's own key). On a GPU,
where torch's own dropout is one fused Philox kernel, modules keep torch's dropout (its stream then follows
torch's generator, as before).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import nn

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment: 2^64 / the golden ratio, odd
MIX = ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None))  # Stafford's Mix13: shift, multiplier
LANE_BITS, LANES = 16, 4  # four 16-bit lanes per 64-bit word, one an element
LANE_VALUES = 1 << LANE_BITS
DROPOUT_DOMAIN = 0xD809_0D7E_5EED_0001  # keeps this stream apart from any other keyed by the same seed


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 torch holds it."""
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


def mix(z: int) -> int:
    """SplitMix64's output function (Stafford's Mix13) on a Python int: a bijection of 64-bit words."""
    for shift, multiplier in MIX:
        z ^= z >> shift
        if multiplier is not None:
            z = (z * multiplier) & MASK64
    return z


def stream_key(seed: int, site: int, step: int) -> int:
    """The key of one layer's mask at one step of one trial (64 bits)."""
    key = mix((seed ^ DROPOUT_DOMAIN) & MASK64)
    key = mix((key + (site + 1) * GAMMA) & MASK64)
    return mix((key ^ mix((step + 1) * GAMMA & MASK64)) & MASK64)


def reference_words(key: int, count: int) -> list[int]:
    """The first `count` words of the stream seeded with `key`, one at a time in Python: what `words` computes."""
    return [mix((key + (j + 1) * GAMMA) & MASK64) for j in range(count)]


_WEYL: OrderedDict[tuple[int, str], torch.Tensor] = OrderedDict()  # (count, device) → (j + 1)·γ, j < count
_WEYL_KEPT = 32


def _weyl(count: int, device: torch.device) -> torch.Tensor:
    """(j + 1)·γ mod 2^64 for j < count: the part of every word's counter that only the size decides, made once per
    size (a network's dropout layers come in a few sizes, the last batch's among them)."""
    key = (count, str(device))
    if key not in _WEYL:
        _WEYL[key] = torch.arange(1, count + 1, dtype=torch.int64, device=device).mul_(_signed(GAMMA))
        if len(_WEYL) > _WEYL_KEPT:
            _WEYL.popitem(last=False)
    _WEYL.move_to_end(key)
    return _WEYL[key]


def words(key: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The first `count` words of the SplitMix64 stream seeded with `key`, as int64 (the same bits); vectorised."""
    z = _weyl(count, torch.device(device)) + _signed(key)
    shifted = torch.empty_like(z)
    for shift, multiplier in MIX:
        torch.bitwise_right_shift(z, shift, out=shifted)  # arithmetic: the sign's copies are masked off (logical)
        shifted.bitwise_and_((1 << (64 - shift)) - 1)
        z.bitwise_xor_(shifted)
        if multiplier is not None:
            z.mul_(_signed(multiplier))  # wraps around, as uint64 multiplication does
    return z


def keep_threshold(p: float) -> int:
    """Lanes below this (as unsigned 16-bit numbers) are kept: keep = 1 - p to the nearest 1/65536, at least one."""
    return min(LANE_VALUES, max(1, round((1 - p) * LANE_VALUES)))


def dropout_noise(shape: torch.Size | tuple[int, ...], p: float, key: int, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The mask of stream `key` for a tensor of `shape`, as the factor dropout multiplies by: 0 for a dropped
    element, 65536 / keep_threshold(p) for a kept one. Laid out channels-last for 3 or more dimensions (element i
    in channels-last order is lane i), row-major otherwise."""
    count = math.prod(shape)
    lanes = words(key, -(-count // LANES), device).view(torch.int16)[:count]  # little-endian: lane i of word i // 4
    if len(shape) >= 3:
        lanes = lanes.view(shape[0], *shape[2:], shape[1]).movedim(-1, 1)
    else:
        lanes = lanes.view(shape)
    threshold = keep_threshold(p)
    # int16 holds the lane's value minus 32768. Compared as float32 (every int16 exact), in place: 1 kept, 0 not —
    # three vectorised passes, where a comparison to bool and its cast to float are twice as slow.
    noise = lanes.to(torch.float32).lt_(threshold - LANE_VALUES // 2)
    return (noise if dtype == torch.float32 else noise.to(dtype)).mul_(LANE_VALUES / threshold)


class Dropout(nn.Dropout):
    """nn.Dropout whose CPU mask comes from the counter-based stream (the module's docstring): keyed by the trial's
    `seed` (the engine sets it), the layer's `site` (set where the network is built: `sited`) and its own count
    of training passes. In eval mode, and on a GPU, it is nn.Dropout."""

    def __init__(self, p: float = 0.5, site: int = 0):
        super().__init__(p)
        self.site, self.seed, self.steps = site, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        step, self.steps = self.steps, self.steps + 1
        return x * dropout_noise(x.shape, self.p, stream_key(self.seed, self.site, step), x.device, x.dtype)


def leaves(network: nn.Module) -> Iterator[nn.Module]:
    """A network's layers in order, Dropouts included, a Sequential inside it (a resnet's stage) read as its layers in
    place: the order ablate.engine's packed network stacks them in, and so what a Dropout's site counts."""
    for module in network:
        if isinstance(module, nn.Sequential):
            yield from leaves(module)
        else:
            yield module


def sited(layers: list[nn.Module]) -> nn.Sequential:
    """The layers as a Sequential, each Dropout given its site: the index (in `leaves` order, Dropouts not counted)
    of the layer it follows, the position ablate.engine's packed network gives that layer."""
    network = nn.Sequential(*layers)
    position = -1
    for layer in leaves(network):
        if isinstance(layer, nn.Dropout):
            if isinstance(layer, Dropout):
                layer.site = position
        else:
            position += 1
    return network


def seed_dropout(model: nn.Module, seed: int) -> None:
    """Key the model's dropout masks by a trial's seed (and start its step count afresh)."""
    for module in model.modules():
        if isinstance(module, Dropout):
            module.seed, module.steps = seed, 0
