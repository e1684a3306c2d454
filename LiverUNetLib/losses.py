"""Losses for sparse labels: Dice + BCE counted only on slices a person annotated.

Unannotated slices are unknown, not background, so they get zero weight. The optional boundary
weight map follows the U-Net paper's idea (pixels near an organ border weigh more) with a
Gaussian-blurred border band computed on the training device, after augmentation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def soft_dice(probability: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Batch soft Dice over annotated samples. ``valid`` is (N,) with 1 for annotated slices."""
    weight = valid.view(-1, 1, 1, 1).to(probability.dtype)
    intersection = (probability * target * weight).sum()
    denominator = ((probability + target) * weight).sum()
    return (2 * intersection + eps) / (denominator + eps)


def boundary_weight_map(target: torch.Tensor, w0: float = 5.0, sigma: float = 3.0) -> torch.Tensor:
    """1 + w0 * exp(-d^2 / 2 sigma^2)-like weights around the mask border, (N, 1, H, W).

    The border band (dilation minus erosion) blurred by a Gaussian of ``sigma`` pixels approximates
    the paper's distance-based term for a single organ, at GPU speed.
    """
    dilated = F.max_pool2d(target, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-target, 3, stride=1, padding=1)
    border = (dilated - eroded).clamp_(0, 1)
    radius = int(math.ceil(3 * sigma))
    coords = torch.arange(-radius, radius + 1, device=target.device, dtype=target.dtype)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.max()
    blurred = F.conv2d(border, kernel.view(1, 1, 1, -1), padding=(0, radius))
    blurred = F.conv2d(blurred, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    return 1.0 + w0 * blurred.clamp_(0, 1)


def dice_bce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    bce_weight: float = 1.0,
    boundary_w0: float = 0.0,
) -> torch.Tensor:
    """(1 - Dice) + bce_weight * BCE, both restricted to annotated slices.

    Returns zero (with a gradient path) when the batch holds no annotated slice.
    """
    logits = logits.float()
    valid = valid.float()
    if valid.sum() == 0:
        return logits.sum() * 0.0
    probability = torch.sigmoid(logits)
    dice = soft_dice(probability, target, valid)
    pixel_weight = valid.view(-1, 1, 1, 1).expand_as(logits)
    if boundary_w0 > 0:
        pixel_weight = pixel_weight * boundary_weight_map(target, w0=boundary_w0)
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=pixel_weight, reduction="sum")
    bce = bce / (valid.sum() * logits.shape[-1] * logits.shape[-2])
    return (1.0 - dice) + bce_weight * bce


def neighbour_organs_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean Dice + BCE over the neighbouring-organ channels (N, C, H, W), no border weights.

    An auxiliary task: knowing where the kidneys and the spleen are should keep liver voxels off them; the
    liver loss alone decides what the model is for."""
    per_organ = [dice_bce_loss(logits[:, c : c + 1], target[:, c : c + 1], valid) for c in range(logits.shape[1])]
    return torch.stack(per_organ).mean()
