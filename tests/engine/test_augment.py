"""The CIFAR recipe on the device: `crop` (a padded random crop) and `flip` (a horizontal flip), batched, drawn from the
trial's own stream — exactly torchvision's transforms per image, nothing drawn when they are off, and a packed trial
given exactly its single run's images."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from ablate import datasets
from ablate.engine import _train, affine_draws, affine_theta, augment_batch, resample, train_pack, train_trial
from ablate.engine import apply_augment as apply
from ablate.engine import draw_augment as draw
from ablate.errors import SpecError
from ablate.spec import Augment, CNNModel, ConvBlock, DataSettings, TrainSettings, TrialSettings, parse_study
from tests.conftest import DATA_DIR, TINY_STUDY

CPU = torch.device("cpu")


def _images(n: int = 16) -> torch.Tensor:
    return torch.randint(1, 256, (n, 3, 8, 6), generator=torch.Generator().manual_seed(0)).float()  # no black pixel


def test_crop_is_torchvisions_padded_crop_at_the_drawn_offset():
    images, augment = _images(), Augment(crop=3)
    draws = draw(len(images), augment, torch.Generator().manual_seed(1), CPU)
    out = apply(images, draws, augment)
    for image, (top, left), mine in zip(images, draws.offsets.tolist(), out):
        expected = TF.crop(TF.pad(image, [3], fill=0), top, left, 8, 6)
        assert torch.equal(mine, expected)
    assert (out == 0).any()  # black moved in from the padding
    assert len({tuple(o) for o in draws.offsets.tolist()}) > 4  # a window of its own per image
    assert draws.offsets.min() >= 0 and draws.offsets.max() <= 6


def test_flip_mirrors_the_drawn_half_of_the_images():
    images, augment = _images(64), Augment(flip=True)
    draws = draw(len(images), augment, torch.Generator().manual_seed(2), CPU)
    out = apply(images, draws, augment)
    for image, flipped, mine in zip(images, draws.flips.tolist(), out):
        assert torch.equal(mine, TF.horizontal_flip(image) if flipped else image)
    assert 16 < int(draws.flips.sum()) < 48


def test_crop_keeps_the_expected_share_of_each_image_and_moves_almost_every_one():
    """Offsets are uniform in [0, 2·crop]: each image keeps (H − |dy|)(W − |dx|) of its pixels, E|d| = c(c+1)/(2c+1)."""
    images, augment = _images(4000), Augment(crop=2)
    out = augment_batch(images, augment, torch.Generator().manual_seed(5))
    lost = 2 * 3 / 5
    expected = (8 - lost) / 8 * (6 - lost) / 6
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.mean() / images.mean() == pytest.approx(expected, rel=0.02)
    moved = (out != images).flatten(1).any(1).float().mean()
    assert moved == pytest.approx(24 / 25, abs=0.02)  # only the centred window (1 in 25) leaves an image alone


def test_flip_keeps_every_images_pixels_and_changes_about_half():
    images, augment = _images(4000), Augment(flip=True)
    out = augment_batch(images, augment, torch.Generator().manual_seed(6))
    assert torch.equal(out.flatten(1).sort(1).values, images.flatten(1).sort(1).values)
    assert (out != images).flatten(1).any(1).float().mean() == pytest.approx(0.5, abs=0.03)


def test_off_draws_nothing_and_an_affine_study_is_unchanged():
    """A study without crop or flip draws exactly what it did before they existed: the same affine numbers from the
    same stream, so its results are bit-identical."""
    images = _images()
    augment = Augment(rotation=7.0, translate=0.1)
    mine = augment_batch(images, replace(augment, crop=0, flip=False), torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    before = resample(images, affine_theta(affine_draws(len(images), generator, CPU), augment))
    assert torch.equal(mine, before)
    assert draw(4, Augment(), torch.Generator(), CPU) == draw(4, Augment(), torch.Generator(), CPU)
    assert not Augment().active and Augment(crop=2).active and Augment(flip=True).active


def test_crop_and_flip_come_before_the_affine_part_from_one_stream():
    images, augment = _images(), Augment(crop=2, flip=True, rotation=10.0)
    draws = draw(len(images), augment, torch.Generator().manual_seed(4), CPU)
    generator = torch.Generator().manual_seed(4)
    offsets = torch.randint(0, 5, (len(images), 2), generator=generator)
    flips = torch.rand(len(images), generator=generator) < 0.5
    assert torch.equal(draws.offsets, offsets) and torch.equal(draws.flips, flips)
    assert torch.equal(draws.affine, affine_draws(len(images), generator, CPU))


def _affine_only(images: torch.Tensor, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """augment_batch as it was before crop and flip: affine draws straight from the stream, one resampling."""
    return resample(images, affine_theta(affine_draws(len(images), generator, images.device), augment))


DATA = DataSettings(val_size=200, train_limit=600, test_limit=300)
CNN = CNNModel(
    blocks=(ConvBlock(out=4, padding=1, pool=True), ConvBlock(out=6, batchnorm=True)), head="linear"
).resolved()


def _trial(seed: int, **train) -> TrialSettings:
    return TrialSettings("mnist", seed, DATA, CNN, replace(TrainSettings(epochs=2, batch_size=64), **train))


def test_a_rotation_only_training_is_bit_identical_to_before(monkeypatch):
    data = datasets.load("mnist", DATA, DATA_DIR, CPU)
    trial = _trial(0, augment=Augment(rotation=10.0, crop=0, flip=False), epochs=1)
    now = train_trial(trial, data, CPU)
    monkeypatch.setattr(_train, "augment_batch", _affine_only)
    before = train_trial(trial, data, CPU)
    timeless = lambda history: [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]  # noqa: E731
    assert timeless(now.history) == timeless(before.history) and now.test_loss == before.test_loss


def test_packed_trials_get_their_single_runs_crops_and_flips():
    """At a negligible learning rate (so float sums in another order, which differ on every CPU, cannot grow into a
    drift, see tests/engine/test_pack.py) a pack's trials see exactly their single runs' augmented images: their
    training losses agree to the rounding of the same forward passes (~1e-7), where other crops and flips would move
    them by 1e-3 or more; a near-tie's argmax may flip."""
    torch.set_num_threads(1)
    data = datasets.load("mnist", DATA, DATA_DIR, CPU)
    trials = [_trial(seed, lr=1e-8, augment=Augment(crop=4, flip=True, rotation=5.0)) for seed in (0, 1)]
    for packed, single in zip(train_pack(trials, data, CPU), (train_trial(t, data, CPU) for t in trials)):
        for mine, theirs in zip(packed.history, single.history):
            assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-5)
            assert mine["val_accuracy"] == pytest.approx(theirs["val_accuracy"], abs=1 / 200 + 1e-6)


def test_a_study_writes_crop_and_flip_and_a_negative_crop_is_named():
    study = parse_study(TINY_STUDY.replace("[train]", "[train]\naugment = { crop = 4, flip = true }"), "s.toml")
    assert study.stages[0].train.augment == Augment(crop=4, flip=True)
    with pytest.raises(SpecError) as info:
        parse_study(TINY_STUDY.replace("[train]", "[train]\naugment = { crop = -1 }"), "s.toml")
    assert info.value.path == "train.augment.crop"
