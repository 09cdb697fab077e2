"""The counter-based dropout stream (ablate.models' _dropout): SplitMix64's words, the keep rate, and independence
between neighbouring elements, steps, layers and seeds — by tests that fail on a bad generator."""

from __future__ import annotations

import math

import pytest
import torch

from ablate.models import Dropout, seed_dropout
from ablate.models._dropout import (
    LANE_VALUES,
    dropout_noise,
    keep_threshold,
    reference_words,
    stream_key,
    words,
)

SHAPE = (64, 16, 16, 16)  # 262,144 elements: a batch of a small CNN's activations
CHI2_1 = 30.0  # χ² with 1 degree of freedom: a false alarm once in ~2e7 (each check below is one such test)
CHI2_15 = 65.0  # with 15 degrees of freedom: ~1e-7


def _kept(seed: int, site: int, step: int, shape=SHAPE, p: float = 0.5) -> torch.Tensor:
    """Ours: which elements a mask keeps, in the tensor's logical (N, C, H, W) order."""
    return dropout_noise(shape, p, stream_key(seed, site, step)) != 0


def test_the_words_are_splitmix64s():
    """Word j of the stream seeded with `key` is SplitMix64's (j+1)-th output from state `key`: its published first
    output from 0, and a Python reference for another key, to the bit."""
    assert reference_words(0, 1) == [0xE220A8397B1DCDAF]
    key = stream_key(7, 3, 11)
    assert [w & (2**64 - 1) for w in words(key, 4099).tolist()] == reference_words(key, 4099)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_the_keep_rate_is_one_minus_p_within_binomial_error(p):
    kept = torch.stack([_kept(seed, 0, step, p=p) for seed in range(2) for step in range(2)])
    n, keep = kept.numel(), keep_threshold(p) / LANE_VALUES
    assert abs(keep - (1 - p)) <= 0.5 / LANE_VALUES  # the rate to the nearest 1/65536
    assert abs(kept.float().mean().item() - keep) < 5 * math.sqrt(keep * (1 - keep) / n)


def test_a_kept_element_is_scaled_so_that_the_mean_is_unchanged():
    noise = dropout_noise((1000, 300), 0.1, stream_key(0, 0, 0), dtype=torch.float64)
    assert set(noise.unique().tolist()) == {0.0, LANE_VALUES / keep_threshold(0.1)}
    assert keep_threshold(0.1) / LANE_VALUES * noise.max().item() == pytest.approx(1.0, abs=1e-15)


def _chi2_pair(a: torch.Tensor, b: torch.Tensor) -> float:
    """n·r² of two bit vectors: χ² with one degree of freedom when they are independent and fair."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    denominator = (a.square().sum() * b.square().sum()).sqrt().item()
    if denominator == 0:
        return math.inf  # a constant: not random at all
    r = (a * b).sum().item() / denominator
    return a.numel() * r * r


def _chi2_patterns(bits: torch.Tensor, width: int = 4) -> float:
    """χ² (2^width − 1 degrees of freedom) of the patterns of `width` consecutive bits, counted on disjoint runs."""
    runs = bits.flatten()[: bits.numel() // width * width].view(-1, width).long()
    codes = (runs * (2 ** torch.arange(width))).sum(dim=1)
    counts = torch.bincount(codes, minlength=2**width).double()
    expected = len(codes) / 2**width
    return ((counts - expected).square() / expected).sum().item()


def failed_checks(kept) -> list[str]:
    """The independence checks a mask generator `kept(seed, site, step) → bool (N, C, H, W)` fails, at p = 0.5."""
    mask = kept(1, 2, 3)
    canonical = mask.movedim(1, -1).flatten()  # the order the stream numbers elements in
    checks = {
        "fair": _chi2_pair(mask, torch.ones_like(mask)) if mask.all() or not mask.any() else
        (mask.double().mean().item() - 0.5) ** 2 * 4 * mask.numel(),
        "stream neighbours": _chi2_pair(canonical[:-1], canonical[1:]),
        "neighbouring columns": _chi2_pair(mask[..., :-1], mask[..., 1:]),
        "neighbouring rows": _chi2_pair(mask[:, :, :-1], mask[:, :, 1:]),
        "neighbouring channels": _chi2_pair(mask[:, :-1], mask[:, 1:]),
        "neighbouring samples": _chi2_pair(mask[:-1], mask[1:]),
        "consecutive steps": _chi2_pair(mask, kept(1, 2, 4)),
        "neighbouring layers": _chi2_pair(mask, kept(1, 3, 3)),
        "neighbouring seeds": _chi2_pair(mask, kept(2, 2, 3)),
    }
    failed = [name for name, chi2 in checks.items() if chi2 > CHI2_1]
    if _chi2_patterns(canonical) > CHI2_15:
        failed.append("4-element patterns")
    return failed


def test_the_stream_passes_the_independence_checks():
    assert failed_checks(_kept) == []


def _from_bits(bits) -> callable:
    """A generator of one bit per element, numbered in the stream's (channels-last) order: `bits(seed, site, step,
    index)` → 0/1 int64 tensor."""

    def kept(seed: int, site: int, step: int) -> torch.Tensor:
        n, c, h, w = SHAPE
        index = torch.arange(math.prod(SHAPE), dtype=torch.int64)
        return bits(seed, site, step, index).bool().view(n, h, w, c).movedim(-1, 1)

    return kept


def _lcg_low_bit(seed: int, site: int, step: int, index: torch.Tensor) -> torch.Tensor:
    """The low bit of a power-of-two-modulus LCG (glibc's constants), one draw an element: it alternates."""
    state, bits = (seed * 1_000_003 + site * 7919 + step) % 2**31, []
    for _ in range(4096):
        state = (1103515245 * state + 12345) % 2**31
        bits.append(state & 1)
    return torch.tensor(bits)[index % 4096]


def _splitmix_without_step(seed: int, site: int, step: int, index: torch.Tensor) -> torch.Tensor:
    """A good stream whose key forgets the step: every step draws the same mask."""
    return (dropout_noise((index.numel(),), 0.5, stream_key(seed, site, 0)) != 0).long()


def _splitmix_without_seed(seed: int, site: int, step: int, index: torch.Tensor) -> torch.Tensor:
    return (dropout_noise((index.numel(),), 0.5, stream_key(0, site, step)) != 0).long()


def _weak_mixer(seed: int, site: int, step: int, index: torch.Tensor) -> torch.Tensor:
    """One multiply of a counter, top bit taken: hash-like, but neighbouring counters' bits follow each other."""
    z = (index + seed * 65537 + site * 257 + step * 17) * 0x9E3779B1 % 2**32
    return (z >> 31) & 1


@pytest.mark.parametrize("bad, check", [
    (lambda seed, site, step, index: (seed + index) % 2, "stream neighbours"),
    (_lcg_low_bit, "stream neighbours"),
    (_splitmix_without_step, "consecutive steps"),
    (_splitmix_without_seed, "neighbouring seeds"),
    (_weak_mixer, "stream neighbours"),
])
def test_the_independence_checks_fail_a_bad_generator(bad, check):
    """Each check can fail: the bad generators are caught, each by the check aimed at its flaw."""
    assert check in failed_checks(_from_bits(bad))


def test_the_same_element_gets_the_same_bit_in_any_layout_and_any_batch_slice():
    x = torch.randn(8, 6, 5, 5)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    one, other = Dropout(0.3).train(), Dropout(0.3).train()
    assert torch.equal(one(x), other(channels_last))


def test_a_module_keys_its_masks_by_seed_site_and_step():
    x = torch.ones(16, 8, 6, 6)
    first, second = Dropout(0.5).train(), Dropout(0.5).train()
    seed_dropout(torch.nn.Sequential(first), 3)
    seed_dropout(torch.nn.Sequential(second), 3)
    steps = [first(x) for _ in range(3)]
    assert not torch.equal(steps[0], steps[1])  # a new mask every step
    assert torch.equal(second(x), steps[0])  # the same seed, site and step: the same mask
    second.site = 1
    assert not torch.equal(second(x), steps[1])
    seed_dropout(torch.nn.Sequential(second), 3)  # counts steps afresh
    assert torch.equal(first.eval()(x), x) and second.steps == 0
