"""Paired augmentation: image and mask move together, seeded, binary masks, never a left-right flip."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import one_thread  # noqa: F401 - autouse fixture
from LiverUNetLib.augmentation import (
    Batch,
    Compose,
    RandomAffineElastic,
    RandomBiasField,
    RandomContrast,
    RandomGamma,
    RandomIntensityCurve,
    RandomLiverBrightness,
    RandomNoise,
    default_augmentation,
)


def square_batch(n=6, channels=1, size=48, box=(14, 30, 10, 26)) -> Batch:
    r0, r1, c0, c1 = box
    image = torch.zeros(n, channels, size, size)
    image[..., r0:r1, c0:c1] = 1.0
    mask = (image[:, :1] > 0.5).float()
    return Batch(image, mask, torch.tensor([1.0, 0.0] * (n // 2) + [1.0] * (n % 2)))


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("seed", range(4))
def test_spatial_transform_moves_image_and_mask_together(seed):
    batch = square_batch(channels=3)
    out = RandomAffineElastic(probability=1.0)(batch, generator(seed))
    assert out.image.shape == batch.image.shape and out.mask.shape == batch.mask.shape
    moved = 0
    for n in range(out.image.shape[0]):
        from_image = out.image[n, 0] > 0.5
        assert iou(from_image, out.mask[n, 0]) > 0.97
        # all channels (2.5D neighbours) share one sampling grid
        torch.testing.assert_close(out.image[n, 1], out.image[n, 0])
        torch.testing.assert_close(out.image[n, 2], out.image[n, 0])
        moved += iou(out.mask[n, 0], batch.mask[n, 0]) < 0.9
    assert moved >= 3, "the transform should actually move the square"


def test_full_pipeline_keeps_the_mask_on_the_bright_region():
    batch = square_batch(n=16)
    # appearance transforms may darken the liver on purpose; the geometry is what is checked here
    out = default_augmentation(1.0, appearance=False)(batch, generator(7))
    for n in range(16):
        inside = out.image[n, 0][out.mask[n, 0] > 0.5]
        outside = out.image[n, 0][out.mask[n, 0] < 0.5]
        assert float(inside.mean()) - float(outside.mean()) > 0.4
    torch.testing.assert_close(out.valid, batch.valid)


@pytest.mark.parametrize("strength", [1.0, 2.0])
def test_masks_stay_binary(strength):
    out = default_augmentation(strength)(square_batch(n=8), generator(3))
    values = torch.unique(out.mask)
    assert set(values.tolist()) <= {0.0, 1.0}
    assert out.mask.dtype == torch.float32
    assert float(out.mask.sum()) > 0


def test_seeded_reproducibility():
    batch = square_batch(n=4)
    a = default_augmentation(1.0)(batch, generator(11))
    b = default_augmentation(1.0)(batch, generator(11))
    c = default_augmentation(1.0)(batch, generator(12))
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)
    torch.testing.assert_close(a.mask, b.mask, rtol=0, atol=0)
    assert not torch.equal(a.image, c.image)


def test_samples_in_a_batch_get_different_transforms():
    batch = square_batch(n=4)
    out = RandomAffineElastic(probability=1.0)(batch, generator(5))
    assert not torch.equal(out.mask[0], out.mask[1])


def test_inputs_are_not_modified():
    batch = square_batch(n=4)
    image, mask = batch.image.clone(), batch.mask.clone()
    default_augmentation(2.0)(batch, generator(1))
    assert torch.equal(batch.image, image) and torch.equal(batch.mask, mask)


def column_centroid(mask: torch.Tensor) -> float:
    cols = torch.arange(mask.shape[-1], dtype=torch.float32)
    return float((mask.sum(dim=-2) * cols).sum() / mask.sum())


@pytest.mark.parametrize("strength", [1.0, 2.0])
def test_never_a_left_right_flip(strength):
    # An object on one side (columns 4..16 of 48) must stay on that side for every seed.
    size = 48
    pipeline = default_augmentation(strength)
    for seed in range(40):
        batch = square_batch(n=4, size=size, box=(16, 32, 4, 16))
        out = pipeline(batch, generator(seed))
        for n in range(4):
            assert float(out.mask[n].sum()) > 0
            assert column_centroid(out.mask[n, 0]) < size / 2 - 4, f"seed {seed}"
            assert column_centroid(out.image[n, 0].clamp(min=0)) < size / 2, f"seed {seed}"


def test_no_flip_transform_in_the_default_pipeline():
    pipeline = default_augmentation(1.0)
    names = [type(t).__name__.lower() for t in pipeline.transforms]
    assert not [n for n in names if "flip" in n]
    assert {"randomaffineelastic", "randomgamma", "randomcontrast", "randomnoise", "randomliverbrightness",
            "randomintensitycurve"} == set(names)
    plain = default_augmentation(1.0, appearance=False)
    assert "randomliverbrightness" not in {type(t).__name__.lower() for t in plain.transforms}


def test_strength_zero_is_the_identity():
    batch = square_batch()
    out = default_augmentation(0.0)(batch, generator(0))
    assert torch.equal(out.image, batch.image) and torch.equal(out.mask, batch.mask)


def test_probability_zero_spatial_transform_is_nearly_the_identity():
    batch = square_batch()
    out = RandomAffineElastic(probability=0.0)(batch, generator(0))
    torch.testing.assert_close(out.image, batch.image, atol=1e-5, rtol=0)
    assert torch.equal(out.mask, batch.mask)


def test_intensity_transforms_leave_the_mask_alone():
    batch = square_batch(n=8)
    torch.manual_seed(0)
    batch.image = batch.image + torch.rand_like(batch.image) * 0.2
    for transform in (RandomGamma(probability=1.0), RandomContrast(probability=1.0), RandomNoise(probability=1.0),
                      RandomIntensityCurve(probability=1.0), RandomLiverBrightness(probability=1.0),
                      RandomBiasField(probability=1.0)):
        out = transform(batch, generator(2))
        assert torch.equal(out.mask, batch.mask)
        assert not torch.equal(out.image, batch.image)


def test_gamma_keeps_each_sample_s_value_range():
    torch.manual_seed(0)
    image = torch.rand(5, 1, 20, 20) * 3 - 1
    out = RandomGamma(probability=1.0)(Batch(image, torch.zeros(5, 1, 20, 20), torch.ones(5)), generator(4))
    flat_in, flat_out = image.view(5, -1), out.image.view(5, -1)
    torch.testing.assert_close(flat_out.min(1).values, flat_in.min(1).values, atol=1e-5, rtol=0)
    torch.testing.assert_close(flat_out.max(1).values, flat_in.max(1).values, atol=1e-5, rtol=0)


def test_compose_applies_in_order():
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __call__(self, batch, gen):
            calls.append(self.name)
            return batch

    Compose([Recorder("a"), Recorder("b")])(square_batch(), generator(0))
    assert calls == ["a", "b"]


def test_intensity_curve_is_monotone_and_keeps_the_range():
    values = torch.linspace(-2.0, 3.0, 400)
    image = values.view(1, 1, 20, 20).repeat(6, 2, 1, 1)
    batch = Batch(image, torch.zeros(6, 1, 20, 20), torch.ones(6))
    out = RandomIntensityCurve(probability=1.0)(batch, generator(5)).image
    for n in range(6):
        curve = out[n, 0].flatten()
        assert bool((curve[1:] >= curve[:-1] - 1e-6).all()), "the remapping must keep the grey-level order"
        assert abs(float(curve[0]) + 2.0) < 1e-5 and abs(float(curve[-1]) - 3.0) < 1e-5
        torch.testing.assert_close(out[n, 1], out[n, 0])  # one curve for all 2.5D channels
    assert not torch.allclose(out, image, atol=1e-2), "the curve should change the intensities"


def test_liver_brightness_scales_inside_the_mask_only():
    batch = square_batch(n=8, channels=3)
    batch.image = batch.image * 0.5 + 1.0  # background 1.0, liver 1.5; minimum 1.0 acts as "air"
    transform = RandomLiverBrightness(factor=(0.3, 0.31), probability=1.0, soften=1)
    out = transform(batch, generator(0))
    inside = out.mask > 0.5
    assert torch.equal(out.mask, batch.mask)
    torch.testing.assert_close(out.image[~inside.expand_as(out.image)], batch.image[~inside.expand_as(batch.image)])
    # signal above the minimum drops to ~30 %: 1 + 0.5 * 0.3
    assert abs(float(out.image[inside.expand_as(out.image)].mean()) - 1.15) < 0.01


def test_liver_brightness_probability_zero_is_the_identity():
    batch = square_batch(n=4)
    out = RandomLiverBrightness(probability=0.0)(batch, generator(1))
    torch.testing.assert_close(out.image, batch.image)


def test_bias_field_is_a_smooth_positive_shading_shared_by_the_input_slices():
    image = torch.full((6, 3, 40, 40), 2.0)
    image[:, :, 0, 0] = 1.0  # the slice minimum ("air") stays where it is
    out = RandomBiasField(coefficient=0.5, order=3, probability=1.0)(
        Batch(image, torch.zeros(6, 1, 40, 40), torch.ones(6)), generator(3)
    ).image
    gain = out[:, :, 1:, 1:] - 1.0  # signal above the minimum times the field
    assert bool((gain > 0).all()), "a multiplicative field never flips the sign of the signal"
    torch.testing.assert_close(out[:, 1], out[:, 0])
    torch.testing.assert_close(out[:, 2], out[:, 0])
    assert torch.equal(out[:, :, 0, 0], image[:, :, 0, 0])
    # smooth: neighbouring pixels differ by far less than the field's range across the slice (log scale)
    log_field = gain.log()
    step = (log_field[..., 1:] - log_field[..., :-1]).abs().max()
    spread = (log_field.amax(dim=(-1, -2)) - log_field.amin(dim=(-1, -2))).min()
    assert float(spread) > 0.1 and float(step) < float(spread) / 5


def test_bias_field_probability_zero_is_the_identity():
    batch = square_batch(n=4)
    out = RandomBiasField(probability=0.0)(batch, generator(1))
    torch.testing.assert_close(out.image, batch.image)


def test_bias_field_joins_the_pipeline_only_when_asked():
    def names(pipeline):
        return {type(t).__name__ for t in pipeline.transforms}

    assert "RandomBiasField" not in names(default_augmentation(1.0))
    assert "RandomBiasField" in names(default_augmentation(1.0, bias_field=True))
    assert "RandomBiasField" in names(default_augmentation(1.0, appearance=False, bias_field=True))
