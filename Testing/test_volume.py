"""Volume: geometry read from the IJK-to-RAS matrix, the slice axis, and what a model refuses."""

from __future__ import annotations

import numpy as np
import pytest

from engine_helpers import ORIENTATIONS, matrix, rotation_about
from engine_helpers import one_thread  # noqa: F401 - autouse fixture
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.volume import LPS_TO_RAS, Volume


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_spacing_directions_and_slice_axis(name):
    directions, axis = ORIENTATIONS[name]
    spacing_ijk = (0.7, 1.1, 3.5)
    vol = Volume(np.zeros((4, 5, 6), np.int16), matrix(directions, spacing_ijk, origin=(1.0, -2.0, 3.0)))
    np.testing.assert_allclose(vol.spacing_ijk, spacing_ijk, atol=1e-12)
    np.testing.assert_allclose(vol.spacing_kji, spacing_ijk[::-1], atol=1e-12)
    np.testing.assert_allclose(vol.directions, directions, atol=1e-12)
    np.testing.assert_allclose(vol.origin_ras, (1.0, -2.0, 3.0))
    assert vol.voxel_volume_ml == pytest.approx(0.7 * 1.1 * 3.5 / 1000)
    assert vol.slice_axis() == axis


def test_slice_axis_follows_superior_not_the_largest_spacing():
    # Axial grid whose in-plane spacing is the largest: still axis 0 (superior is K).
    vol = Volume(np.zeros((3, 4, 5)), matrix(np.eye(3), (5.0, 5.0, 1.0)))
    assert vol.slice_axis() == 0
    # A sagittal grid with a flipped superior direction (rows going up) is still axis 1.
    flipped = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert Volume(np.zeros((3, 4, 5)), matrix(flipped)).slice_axis() == 1


def test_spacing_kji_is_a_copy():
    vol = Volume(np.zeros((2, 3, 4)), matrix(np.eye(3), (1.0, 2.0, 3.0)))
    spacing = vol.spacing_kji
    spacing[:] = 0
    np.testing.assert_allclose(vol.spacing_kji, (3.0, 2.0, 1.0))


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.eye(3), "4x4"),
        (np.vstack([np.eye(4)[:3], [0, 0, 1, 1]]), "affine"),
        (np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
    ],
)
def test_broken_matrices_are_refused(bad, words):
    with pytest.raises(LiverUNetError, match=words):
        Volume(np.zeros((2, 2, 2)), bad)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((10, 12), np.int16), "2D"),
        (np.zeros((3, 4, 5, 2), np.int16), "4 dimensions"),
        (np.zeros((3, 4, 5, 3), np.uint8), "RGB"),
        (np.zeros((1, 10, 12), np.int16), "single slice"),
        (np.zeros((3, 4, 5), np.complex64), "numeric scalar"),
    ],
)
def test_validate_scalar_3d_refusals(array, words):
    with pytest.raises(LiverUNetError, match=words):
        Volume(array).validate_scalar_3d()


def test_single_slice_is_judged_along_the_superior_axis():
    # A sagittal scan with one voxel along I is fine (many slices along the superior axis) ...
    directions, axis = ORIENTATIONS["sagittal"]
    assert axis == 1
    Volume(np.zeros((5, 6, 1), np.int16), matrix(directions)).validate_scalar_3d()
    # ... but one voxel along its superior axis is a single slice.
    with pytest.raises(LiverUNetError, match="single slice"):
        Volume(np.zeros((5, 1, 6), np.int16), matrix(directions)).validate_scalar_3d()


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_with_a_count(bad_value):
    array = np.ones((3, 4, 5), np.float32)
    array[1, 2, 3] = bad_value
    array[2, 0, 0] = bad_value
    with pytest.raises(LiverUNetError, match=r"has 2 NaN or infinite voxels") as info:
        Volume(array).validate_scalar_3d("CT scan")
    assert "CT scan" in str(info.value)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64, bool])
def test_valid_volumes_pass(dtype):
    Volume(np.ones((3, 4, 5), dtype)).validate_scalar_3d()


def test_with_array_keeps_the_grid_and_checks_the_shape():
    vol = Volume(np.zeros((3, 4, 5), np.int16), matrix(ORIENTATIONS["oblique_axial"][0]), {"modality": "MR"})
    mask = vol.with_array(np.ones((3, 4, 5), np.uint8))
    assert mask.same_grid(vol)
    assert mask.metadata == {"modality": "MR"}
    mask.ijk_to_ras[0, 3] += 100  # the copy is independent
    mask.metadata["x"] = "y"
    assert vol.ijk_to_ras[0, 3] == -20.0 and "x" not in vol.metadata
    with pytest.raises(LiverUNetError, match=r"\(3, 5, 4\) does not match"):
        vol.with_array(np.ones((3, 5, 4)))


def test_same_grid():
    vol = Volume(np.zeros((3, 4, 5)), matrix(np.eye(3)))
    moved = matrix(np.eye(3))
    moved[:3, 3] += (0.0, 0.0, 0.5)
    assert not vol.same_grid(Volume(np.zeros((3, 4, 5)), moved))
    assert not vol.same_grid(Volume(np.zeros((3, 5, 4)), matrix(np.eye(3))))
    nearly = matrix(np.eye(3))
    nearly[0, 3] += 1e-4
    assert vol.same_grid(Volume(np.zeros((3, 4, 5)), nearly))


def test_from_lps_is_ras_with_x_and_y_negated():
    vol = Volume.from_lps(np.zeros((2, 3, 4)), (0.5, 0.6, 2.0), (10.0, 20.0, 30.0), np.eye(3).ravel())
    np.testing.assert_allclose(vol.origin_ras, (-10.0, -20.0, 30.0))
    np.testing.assert_allclose(vol.ijk_to_ras[:3, :3], np.diag([-0.5, -0.6, 2.0]))
    # Voxel (i, j, k) = (1, 2, 1) in LPS is origin + (0.5, 1.2, 2.0).
    ras = vol.ijk_to_ras @ [1, 2, 1, 1]
    np.testing.assert_allclose(ras[:3], (-10.5, -21.2, 32.0))


@pytest.mark.parametrize("seed", range(5))
def test_from_lps_and_lps_geometry_round_trip(seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(3, 3))
    rot, _ = np.linalg.qr(q)  # a random orthonormal matrix, possibly left-handed
    spacing = tuple(rng.uniform(0.3, 6.0, 3))
    origin = tuple(rng.uniform(-300, 300, 3))
    vol = Volume.from_lps(np.zeros((3, 4, 5)), spacing, origin, rot.ravel())
    got_spacing, got_origin, got_direction = vol.lps_geometry()
    np.testing.assert_allclose(got_spacing, spacing, rtol=1e-12)
    np.testing.assert_allclose(got_origin, origin, atol=1e-9)
    np.testing.assert_allclose(np.reshape(got_direction, (3, 3)), rot, atol=1e-12)
    np.testing.assert_allclose(vol.ijk_to_lps, LPS_TO_RAS @ vol.ijk_to_ras)
    again = Volume.from_lps(np.zeros((3, 4, 5)), got_spacing, got_origin, got_direction)
    np.testing.assert_allclose(again.ijk_to_ras, vol.ijk_to_ras, atol=1e-9)


def test_oblique_directions_are_unit_columns():
    directions = rotation_about("A", 33) @ rotation_about("R", -12)
    vol = Volume(np.zeros((2, 2, 2)), matrix(directions, (0.6, 0.6, 5.0)))
    np.testing.assert_allclose(np.linalg.norm(vol.directions, axis=0), 1.0)
    np.testing.assert_allclose(vol.directions, directions, atol=1e-12)


# --- scans tilted past 45 degrees -----------------------------------------------------------------


@pytest.mark.parametrize("degrees", [44.0, 46.0, 55.0])
def test_a_thick_slice_axial_scan_tilted_near_45_degrees_keeps_its_slice_axis(degrees):
    """An axial scan of 5 mm slices tilted about R: past 45 degrees an in-plane (0.8 mm) axis lies closer to
    head-foot, but the acquisition's slices are along the thick axis, and slicing across them fails."""
    from engine_helpers import AXIAL, matrix, rotation_about

    volume = Volume(np.zeros((20, 40, 40), np.float32), matrix(rotation_about("R", degrees) @ AXIAL, (0.8, 0.8, 5.0)))
    assert volume.slice_axis() == 0
    assert volume.slice_tilt_degrees() == pytest.approx(degrees, abs=1e-6)


def test_an_isotropic_scan_tilted_past_45_degrees_takes_the_axis_closest_to_head_foot():
    from engine_helpers import AXIAL, matrix, rotation_about

    volume = Volume(np.zeros((20, 40, 40), np.float32), matrix(rotation_about("R", 50.0) @ AXIAL, (1.0, 1.0, 1.0)))
    assert volume.slice_axis() == 1 and volume.slice_tilt_degrees() == pytest.approx(40.0, abs=1e-6)
