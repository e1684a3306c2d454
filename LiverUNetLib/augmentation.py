"""Paired image/mask augmentation in torch, on the training device.

Readable transform objects in the spirit of torchio, applied to a whole batch at once so a GPU is
not starved by CPU-side augmentation. Spatial transforms move image and mask with one sampling
grid; there is deliberately no flip: the liver must stay on the patient's right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F


@dataclass
class Batch:
    """Images (N, C, H, W), masks (N, M, H, W) in {0, 1} (channel 0 the liver, any others neighbouring organs),
    valid (N,) annotated-slice flags."""

    image: torch.Tensor
    mask: torch.Tensor
    valid: torch.Tensor


class Transform(Protocol):
    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch: ...


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def _coin(n: int, probability: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n,) float flags: 1 where a sample gets the transform."""
    return (torch.rand(n, generator=generator, device=device) < probability).float()


def _value_range(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample minimum and (non-zero) span, shaped (n, 1, 1, 1) for broadcasting."""
    flat = image.reshape(image.shape[0], -1)
    low = flat.min(1).values.view(-1, 1, 1, 1)
    span = (flat.max(1).values.view(-1, 1, 1, 1) - low).clamp_min(1e-6)
    return low, span


@dataclass
class RandomAffineElastic:
    """Rotation, isotropic scale, shift and a smooth elastic field, as one grid_sample per batch."""

    degrees: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    shift_fraction: float = 0.08
    elastic_magnitude: float = 0.03  # displacement in normalised [-1, 1] coordinates
    elastic_grid: int = 5
    probability: float = 0.9

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image, mask = batch.image, batch.mask
        n, _, h, w = image.shape
        device = image.device
        apply = (torch.rand(n, generator=generator, device=device) < self.probability).float()
        angle = _uniform(n, -self.degrees, self.degrees, generator, device) * math.pi / 180 * apply
        zoom = 1.0 + (_uniform(n, self.scale[0], self.scale[1], generator, device) - 1.0) * apply
        shift = _uniform(2 * n, -self.shift_fraction, self.shift_fraction, generator, device).view(n, 2)
        shift = shift * 2 * apply[:, None]
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin * h / w, shift[:, 0]], 1), torch.stack([sin * w / h, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
        if self.elastic_magnitude > 0:
            coarse = torch.randn(
                (n, 2, self.elastic_grid, self.elastic_grid), generator=generator, device=device
            ) * (self.elastic_magnitude * apply.view(n, 1, 1, 1))
            field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
            grid = grid + field.permute(0, 2, 3, 1)
        image = F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        mask = F.grid_sample(mask, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return Batch(image, (mask > 0.5).to(mask.dtype), batch.valid)


@dataclass
class RandomGamma:
    """Gamma on the min-max rescaled intensities, which keeps the value range."""

    log_gamma: float = 0.3
    probability: float = 0.5

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image = batch.image
        n = image.shape[0]
        device = image.device
        apply = _coin(n, self.probability, generator, device)
        gamma = torch.exp(_uniform(n, -self.log_gamma, self.log_gamma, generator, device) * apply).view(n, 1, 1, 1)
        low, span = _value_range(image)
        image = ((image - low) / span).clamp_(0, 1).pow(gamma) * span + low
        return Batch(image, batch.mask, batch.valid)


@dataclass
class RandomContrast:
    """Multiply around the mean and add an offset (brightness/contrast)."""

    contrast: float = 0.2
    brightness: float = 0.1
    probability: float = 0.5

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image = batch.image
        n = image.shape[0]
        device = image.device
        apply = _coin(n, self.probability, generator, device).view(n, 1, 1, 1)
        factor = _uniform(n, 1 - self.contrast, 1 + self.contrast, generator, device).view(n, 1, 1, 1)
        offset = _uniform(n, -self.brightness, self.brightness, generator, device).view(n, 1, 1, 1)
        mean = image.mean(dim=(1, 2, 3), keepdim=True)
        changed = (image - mean) * factor + mean + offset
        return Batch(apply * changed + (1 - apply) * image, batch.mask, batch.valid)


@dataclass
class RandomNoise:
    """Additive Gaussian noise with a random standard deviation up to ``std``."""

    std: float = 0.1
    probability: float = 0.3

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image = batch.image
        n = image.shape[0]
        device = image.device
        sigma = _uniform(n, 0, self.std, generator, device)
        sigma = sigma * (torch.rand(n, generator=generator, device=device) < self.probability).float()
        noise = torch.randn(image.shape, generator=generator, device=device) * sigma.view(n, 1, 1, 1)
        return Batch(image + noise, batch.mask, batch.valid)


@dataclass
class RandomIntensityCurve:
    """A random monotone piecewise-linear remapping of the min-max rescaled intensities.

    Changes which tissues look alike, not only the global contrast, so the network cannot lean on one
    scanner's grey-level ordering (T2 weighting, fat suppression and coil shading all vary).
    """

    control_points: int = 4
    probability: float = 0.3

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image = batch.image
        n = image.shape[0]
        device = image.device
        apply = _coin(n, self.probability, generator, device).view(n, 1, 1, 1)
        # knots at fixed inputs, random increasing outputs: sorted uniform draws between 0 and 1
        inner = torch.sort(torch.rand((n, self.control_points), generator=generator, device=device), dim=1).values
        knots_y = torch.cat([torch.zeros(n, 1, device=device), inner, torch.ones(n, 1, device=device)], 1)
        segments = self.control_points + 1
        low, span = _value_range(image)
        t = ((image - low) / span).clamp(0, 1) * segments
        index = t.floor().clamp_max(segments - 1)
        fraction = t - index
        flat_index = index.long().reshape(n, -1)
        y0 = torch.gather(knots_y, 1, flat_index).view_as(image)
        y1 = torch.gather(knots_y, 1, flat_index + 1).view_as(image)
        remapped = (y0 + (y1 - y0) * fraction) * span + low
        return Batch(apply * remapped + (1 - apply) * image, batch.mask, batch.valid)


@dataclass
class RandomLiverBrightness:
    """Scale the signal inside the (softened) liver mask: a darker or brighter liver than usual.

    Liver signal relative to its neighbours varies between patients (iron overload darkens it on T2,
    fat brightens it, contrast phases shift it on CT). In cross-validation a subject with a dark liver
    was missed entirely by models that had only seen bright ones; this teaches shape over brightness.
    The scaling is multiplicative above the slice minimum (air), so zero signal stays zero signal.
    """

    factor: tuple[float, float] = (0.3, 1.5)
    probability: float = 0.3
    soften: int = 5  # box-blur width in pixels, so the liver edge does not become an artificial step

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image, mask = batch.image, batch.mask
        n = image.shape[0]
        device = image.device
        apply = _coin(n, self.probability, generator, device)
        low_f, high_f = math.log(self.factor[0]), math.log(self.factor[1])
        factor = torch.exp(_uniform(n, low_f, high_f, generator, device))
        gain = (1 + (factor - 1) * apply).view(n, 1, 1, 1)
        weight = mask[:, :1].float()  # the liver channel
        if self.soften > 1:
            weight = F.avg_pool2d(weight, self.soften, stride=1, padding=self.soften // 2, count_include_pad=False)
            weight = weight[..., : mask.shape[-2], : mask.shape[-1]]
        low, _ = _value_range(image)
        scale = 1 + (gain - 1) * weight
        return Batch((image - low) * scale + low, mask, batch.valid)


@dataclass
class RandomBiasField:
    """A smooth multiplicative shading across the slice, like an MRI receive coil's.

    Surface coils make one side of the abdomen brighter than the other and the shading differs
    between scans, so a network should not take "darker here" for "another tissue". The field is
    exp of a random polynomial in x and y (total degree ``order``, coefficients uniform in
    +-``coefficient``), the same for every input slice of a sample, applied above the slice minimum
    so air stays air (as torchio's RandomBiasField, on the training device).
    """

    coefficient: float = 0.5
    order: int = 3
    probability: float = 0.3

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image = batch.image
        n, _, height, width = image.shape
        device = image.device
        powers = [(i, j) for i in range(self.order + 1) for j in range(self.order + 1 - i)]
        coefficients = _uniform(n * len(powers), -self.coefficient, self.coefficient, generator, device)
        coefficients = coefficients.view(n, len(powers)) * _coin(n, self.probability, generator, device).view(n, 1)
        y = torch.linspace(-1, 1, height, device=device).view(height, 1)
        x = torch.linspace(-1, 1, width, device=device).view(1, width)
        basis = torch.stack([(y**i * x**j).expand(height, width) for i, j in powers])  # (P, H, W)
        field = torch.exp(torch.einsum("np,phw->nhw", coefficients, basis)).unsqueeze(1).to(image.dtype)
        low, _ = _value_range(image)
        return Batch((image - low) * field + low, batch.mask, batch.valid)


@dataclass
class Compose:
    transforms: Sequence[Transform]

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        for transform in self.transforms:
            batch = transform(batch, generator)
        return batch


def default_augmentation(strength: float = 1.0, appearance: bool = True, bias_field: bool = False) -> Compose:
    """The standard pipeline; ``strength`` 0 disables it, 1 is the default, up to 2 is stronger.

    ``appearance`` adds the tissue-contrast transforms (random intensity curve, liver brightness);
    ``bias_field`` adds MRI coil shading (``RandomBiasField``).
    """
    s = max(0.0, float(strength))
    if s == 0:
        return Compose([])
    appearance_transforms: list[Transform] = (
        [RandomLiverBrightness(probability=min(1.0, 0.3 * s)), RandomIntensityCurve(probability=min(1.0, 0.3 * s))]
        if appearance
        else []
    )
    if bias_field:
        appearance_transforms.append(RandomBiasField(coefficient=0.5 * s, probability=min(1.0, 0.3 * s)))
    return Compose(
        [
            *appearance_transforms,
            RandomAffineElastic(
                degrees=15.0 * s,
                scale=(1 - 0.15 * s, 1 + 0.15 * s),
                shift_fraction=0.08 * s,
                elastic_magnitude=0.03 * s,
            ),
            RandomGamma(log_gamma=0.3 * s),
            RandomContrast(contrast=0.2 * s, brightness=0.1 * s),
            RandomNoise(std=0.1 * s),
        ]
    )
