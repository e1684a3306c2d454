"""Preprocessing: CT window and MRI z-score, exact in-plane resampling back, 2.5D context, modality checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine_helpers import box_volume
from engine_helpers import one_thread  # noqa: F401 - autouse fixture
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.preprocessing import (
    Modality,
    PreprocessConfig,
    check_modality,
    modality_of_images,
    context_indices,
    in_plane_spacing,
    intensity_statistics,
    network_size,
    normalise,
    require_modality_match,
    resample_slices,
    to_slice_first,
)


def ct_like(seed=0, shape=(6, 40, 40)) -> np.ndarray:
    """Air around a soft-tissue body with some bone, in Hounsfield units."""
    rng = np.random.default_rng(seed)
    array = np.full(shape, -1000, np.int16)
    array[:, 8:32, 8:32] = rng.normal(50, 30, (shape[0], 24, 24)).astype(np.int16)
    array[:, 18:22, 18:22] = 900
    return array


def mri_like(seed=0, shape=(6, 40, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = rng.gamma(2.0, 60.0, shape)
    array[:, 10:30, 10:30] += 400
    return array.astype(np.uint16)


def test_ct_window_maps_to_minus_one_one():
    config = PreprocessConfig(Modality.CT, ct_window=(-200.0, 300.0))
    stats = intensity_statistics(ct_like(), config)
    assert stats == (-200.0, 300.0, 50.0, 250.0)
    x = torch.tensor([-1000.0, -200.0, 50.0, 300.0, 3000.0])
    np.testing.assert_allclose(normalise(x, stats).numpy(), [-1.0, -1.0, 0.0, 1.0, 1.0])


def test_ct_statistics_ignore_the_image():
    config = PreprocessConfig(Modality.CT, ct_window=(-100.0, 100.0))
    assert intensity_statistics(ct_like(0), config) == intensity_statistics(ct_like(1) + 500, config)


def test_mri_zscore_after_percentile_clipping():
    array = mri_like()
    array[0, 0, :5] = 60000  # a few hot pixels must not dominate
    config = PreprocessConfig(Modality.MRI, mri_percentiles=(1.0, 99.0))
    low, high, shift, scale = intensity_statistics(array, config)
    assert (low, high) == pytest.approx(tuple(np.percentile(array.astype(np.float32), [1.0, 99.0])))
    assert high < 1000
    z = normalise(torch.from_numpy(array.astype(np.int32)), (low, high, shift, scale)).numpy()
    assert abs(float(z.mean())) < 1e-4
    assert float(z.std()) == pytest.approx(1.0, abs=1e-4)
    assert float(z.max()) == pytest.approx((high - shift) / scale, rel=1e-6)


def test_mri_statistics_of_a_constant_image_do_not_divide_by_zero():
    stats = intensity_statistics(np.full((3, 8, 8), 7, np.int16), PreprocessConfig())
    assert stats[3] == 1.0
    assert torch.isfinite(normalise(torch.full((2, 2), 7), stats)).all()


def test_mri_statistics_on_a_large_volume_use_a_faithful_sample():
    rng = np.random.default_rng(3)
    array = rng.gamma(2.0, 60.0, (11, 460, 460)).astype(np.float32)  # 2.3 M voxels: sampled
    assert array.size > 2_000_000
    low, high, shift, scale = intensity_statistics(array, PreprocessConfig())
    exact_low, exact_high = np.percentile(array, [0.5, 99.5])
    assert low == pytest.approx(exact_low, rel=0.02)
    assert high == pytest.approx(exact_high, rel=0.02)
    clipped = np.clip(array, exact_low, exact_high)
    assert shift == pytest.approx(float(clipped.mean()), rel=0.01)
    assert scale == pytest.approx(float(clipped.std()), rel=0.01)


@pytest.mark.parametrize("native, size", [((37, 53), (20, 29)), ((64, 64), (31, 47)), ((9, 10), (40, 33))])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_resample_there_and_back_keeps_the_shape_exactly(native, size, mode):
    batch = torch.rand((3, 2) + native)
    there = resample_slices(batch, size, mode)
    assert tuple(there.shape) == (3, 2) + size
    back = resample_slices(there, native, mode)
    assert tuple(back.shape) == (3, 2) + native


def test_resample_to_the_same_size_is_the_identity_and_constants_stay_constant():
    batch = torch.rand(2, 1, 12, 14)
    assert resample_slices(batch, (12, 14)) is batch
    constant = torch.full((1, 1, 25, 31), 3.5)
    round_trip = resample_slices(resample_slices(constant, (13, 17)), (25, 31))
    torch.testing.assert_close(round_trip, constant)


def test_resample_keeps_a_centred_square_centred():
    image = torch.zeros(1, 1, 41, 41)
    image[..., 15:26, 15:26] = 1.0
    back = resample_slices(resample_slices(image, (20, 20)), (41, 41))
    assert back.shape == image.shape
    rows = torch.arange(41.0)
    centroid = float((back[0, 0].sum(1) * rows).sum() / back.sum())
    assert centroid == pytest.approx(20.0, abs=0.05)


def test_network_size():
    assert network_size((100, 80), (1.0, 2.0), 2.5) == (40, 64)
    assert network_size((256, 200), (1.5, 1.5), None) == (256, 200)
    assert network_size((10, 10), (1.0, 1.0), 5.0) == (8, 8)  # never below 8 pixels
    assert network_size((33, 47), (0.7, 0.7), 0.7) == (33, 47)


def test_in_plane_spacing_drops_the_slice_axis():
    axial, _ = box_volume("axial", spacing_in_plane=1.2, slice_spacing=5.0)
    assert in_plane_spacing(axial) == pytest.approx((1.2, 1.2))
    sagittal, _ = box_volume("sagittal", spacing_in_plane=0.9, slice_spacing=4.0)
    assert sagittal.slice_axis() == 1
    assert in_plane_spacing(sagittal) == pytest.approx((0.9, 0.9))


def test_in_plane_spacing_order_is_rows_then_columns():
    vol, _ = box_volume("coronal_i_superior")
    vol.ijk_to_ras[:3, 1] *= 2.0  # J (numpy axis 1) now 3.0 mm, K (axis 0) 1.5 mm
    assert vol.slice_axis() == 2
    assert in_plane_spacing(vol) == pytest.approx((1.5, 3.0))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_to_slice_first(axis):
    array = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    first = to_slice_first(array, axis)
    assert first.shape[0] == array.shape[axis]
    assert np.shares_memory(first, array)
    index = [slice(None)] * 3
    index[axis] = 2
    np.testing.assert_array_equal(first[2], array[tuple(index)])


def test_context_indices_clamp_at_both_ends():
    got = context_indices(np.array([0, 1, 5, 9]), 10, 2)
    assert got.tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [3, 4, 5, 6, 7], [7, 8, 9, 9, 9]]
    assert context_indices(np.array([4]), 10, 0).tolist() == [[4]]
    assert context_indices(np.array([0, 1]), 2, 3).tolist() == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1]]


def test_config_round_trips_through_json():
    config = PreprocessConfig(Modality.CT, in_plane_spacing_mm=None, context_slices=2, ct_window=(-150.0, 250.0))
    assert config.in_channels == 5
    data = json.loads(json.dumps(config.to_dict()))
    assert data["modality"] == "ct"
    assert PreprocessConfig.from_dict(data) == config
    assert PreprocessConfig.from_dict(PreprocessConfig().to_dict()) == PreprocessConfig()


def test_modality_checks():
    assert check_modality(ct_like(), Modality.CT) is None
    assert check_modality(mri_like(), Modality.MRI) is None
    mri_on_ct = check_modality(mri_like(), Modality.CT)
    assert mri_on_ct and "does not look like CT" in mri_on_ct


def test_training_images_tell_their_modality():
    from LiverUNetLib.volume import Volume

    mri, ct = Volume(mri_like(), np.eye(4)), Volume(ct_like(), np.eye(4))
    assert modality_of_images([mri, mri]) is Modality.MRI
    assert modality_of_images([ct]) is Modality.CT
    # a modality the reader kept from DICOM wins over the intensities
    assert modality_of_images([Volume(mri_like(), np.eye(4), {"modality": "CT"})]) is Modality.CT
    with pytest.raises(LiverUNetError, match="mix CT and MRI"):
        modality_of_images([mri, ct])


def test_ct_image_on_an_mri_model_is_refused_with_what_to_do():
    with pytest.raises(LiverUNetError) as info:
        require_modality_match(ct_like(), Modality.MRI, allow_mismatch=False)
    message = str(info.value)
    assert "looks like CT" in message and "trained on MRI" in message
    assert "train or fine-tune" in message
    assert "--allow-modality-mismatch" in message


def test_allowed_mismatch_becomes_a_warning():
    warnings = require_modality_match(ct_like(), Modality.MRI, allow_mismatch=True)
    assert len(warnings) == 1 and "looks like CT" in warnings[0]
    assert require_modality_match(mri_like(), Modality.MRI, allow_mismatch=False) == []


def test_body_statistics_ignore_air_padding_around_the_patient():
    """A larger field of view (air around the body) must not change MRI normalisation."""
    from LiverUNetLib.preprocessing import IntensityRegion

    rng = np.random.default_rng(3)
    body = rng.normal(400, 80, (12, 60, 70)).clip(50, None).astype(np.float32)
    padded = np.zeros((12, 160, 170), np.float32)
    padded[:, 50:110, 50:120] = body
    config = PreprocessConfig(modality=Modality.MRI, intensity_region=IntensityRegion.BODY)
    tight, wide = intensity_statistics(body, config, 0), intensity_statistics(padded, config, 0)
    assert np.allclose(tight, wide, rtol=0.02)
    volume_wide = intensity_statistics(padded, PreprocessConfig(intensity_region=IntensityRegion.VOLUME), 0)
    assert not np.allclose(tight, volume_wide, rtol=0.2)  # the old behaviour is shifted by the air


def test_model_files_without_the_option_keep_whole_volume_statistics():
    from LiverUNetLib.preprocessing import IntensityRegion

    old = PreprocessConfig().to_dict()
    del old["intensity_region"]
    assert PreprocessConfig.from_dict(old).intensity_region is IntensityRegion.VOLUME
    assert PreprocessConfig.from_dict(PreprocessConfig().to_dict()).intensity_region is IntensityRegion.BODY
