"""Augmentation on the device: a random rotation, zoom and shift per image, as one batched resampling."""

from __future__ import annotations

import math

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


def augment_batch(images: torch.Tensor, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, shift and zoom, a different one per image, as one batched affine resampling on the device."""
    return resample(images, affine_theta(affine_draws(images.shape[0], generator, images.device), augment))

