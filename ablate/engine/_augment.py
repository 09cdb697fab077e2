"""Augmentation on the device, batched, a different transform per image: a padded random crop, a horizontal flip,
then a random rotation, zoom and shift as one affine resampling — on uint8 pixels cast to float, before
normalisation, so the pixels moved in are black.

Every draw comes from the trial's own augment generator, in a fixed order (crop offsets, flips, affine numbers),
and a part that is off draws nothing: switching crop or flip on leaves the affine draws of a study without them
unchanged, and a packed trial draws exactly what its single run would (the packed engine concatenates per-trial
`Draws`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ablate.spec import Augment

AUGMENT_SEED_OFFSET = 7919  # augmentation draws from its own stream, so switching it on leaves the batch order alone


def affine_draws(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The uniform numbers one batch's augmentation uses, (n, 4): angle, scale and the two shifts, in U(-1, 1)."""
    angle, scale, shift = (torch.rand(*shape, device=device, generator=generator) for shape in ((n,), (n,), (n, 2)))
    return torch.cat([angle.unsqueeze(1), scale.unsqueeze(1), shift], dim=1) * 2 - 1


def affine_theta(draws: torch.Tensor, augment: Augment) -> torch.Tensor:
    """A rotation, zoom and shift per image from its draws, as the (n, 2, 3) matrices affine_grid takes."""
    angle = draws[:, 0] * math.radians(augment.rotation)
    low, high = augment.scale
    scale = low + (high - low) * (draws[:, 1] + 1) / 2
    shift = draws[:, 2:] * (2 * augment.translate)  # affine_grid coordinates span 2 per image side
    cos, sin, inv = angle.cos(), angle.sin(), 1.0 / scale
    tx, ty = shift[:, 0], shift[:, 1]
    # affine_grid maps output to input coordinates: the inverse of x_out = scale · R(angle) · x_in + shift.
    return torch.stack(
        [
            torch.stack([cos * inv, sin * inv, -(cos * tx + sin * ty) * inv], dim=1),
            torch.stack([-sin * inv, cos * inv, -(-sin * tx + cos * ty) * inv], dim=1),
        ],
        dim=1,
    )


def resample(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply one affine transform per image; pixels moved in from outside the image are 0 (black)."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class Draws:
    """One batch's random numbers; None where that part of the augmentation is off."""

    offsets: torch.Tensor | None  # (n, 2) ints in [0, 2·crop]: the crop window's top-left corner in the padded image
    flips: torch.Tensor | None  # (n,) bool: mirror this image
    affine: torch.Tensor | None  # (n, 4) U(-1, 1): angle, scale, shifts


def draw(n: int, augment: Augment, generator: torch.Generator, device: torch.device) -> Draws:
    offsets = flips = affine = None
    if augment.crop:
        offsets = torch.randint(0, 2 * augment.crop + 1, (n, 2), device=device, generator=generator)
    if augment.flip:
        flips = torch.rand(n, device=device, generator=generator) < 0.5
    if augment.affine:
        affine = affine_draws(n, generator, device)
    return Draws(offsets, flips, affine)


def concat(draws: list[Draws]) -> Draws:
    """Several trials' draws as one batch's, trial after trial (a pack's images are stacked in that order)."""
    def joined(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
        return None if parts[0] is None else torch.cat(parts)

    return Draws(*(joined([getattr(d, part) for d in draws]) for part in ("offsets", "flips", "affine")))


def crop(images: torch.Tensor, offsets: torch.Tensor, padding: int) -> torch.Tensor:
    """Each image padded with `padding` zeros and cut to its size at its own offset: two gathers, no loop."""
    n, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)  # (n, H)
    cols = offsets[:, 1, None] + torch.arange(width, device=images.device)  # (n, W)
    picked = padded.gather(2, rows.view(n, 1, height, 1).expand(n, channels, height, padded.shape[3]))
    return picked.gather(3, cols.view(n, 1, 1, width).expand(n, channels, height, width))


def apply(images: torch.Tensor, draws: Draws, augment: Augment) -> torch.Tensor:
    """Crop, flip, then the affine resampling, each where its draws say (float images, 0 … 255)."""
    if draws.offsets is not None:
        images = crop(images, draws.offsets, augment.crop)
    if draws.flips is not None:
        images = torch.where(draws.flips.view(-1, 1, 1, 1), images.flip(-1), images)
    if draws.affine is not None:
        images = resample(images, affine_theta(draws.affine, augment))
    return images


def augment_batch(images: torch.Tensor, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """The study's augmentation of one training batch, a different transform per image, on the device."""
    return apply(images, draw(images.shape[0], augment, generator, images.device), augment)

