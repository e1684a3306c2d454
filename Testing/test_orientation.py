"""Slices reach the network in one canonical in-plane layout, however the file stores them.

A DICOM series (rows toward posterior) and the CHAOS NIfTI files (rows toward anterior) hold the
same anatomy in mirrored arrays; without canonicalisation the model would see the abdomen upside
down or mirrored.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from LiverUNetLib.inference import InferenceConfig, segment_volume
from LiverUNetLib.preprocessing import InPlaneOrientation, canonical_orientation, to_slice_first
from LiverUNetLib.volume import Volume

from engine_helpers import load_trained_phantom_model


def restored(volume: Volume, flip_i: bool = False, flip_j: bool = False, swap_ij: bool = False) -> Volume:
    """The same physical image stored another way (voxels moved, matrix adjusted to match)."""
    array, matrix = volume.array, volume.ijk_to_ras.copy()
    if flip_i:
        n = array.shape[2]
        matrix[:, 3] = matrix @ np.array([n - 1, 0, 0, 1.0])
        matrix[:3, 0] *= -1
        array = array[:, :, ::-1]
    if flip_j:
        n = array.shape[1]
        matrix[:, 3] = matrix @ np.array([0, n - 1, 0, 1.0])
        matrix[:3, 1] *= -1
        array = array[:, ::-1, :]
    if swap_ij:
        matrix[:3, [0, 1]] = matrix[:3, [1, 0]]
        array = array.transpose(0, 2, 1)
    return Volume(np.ascontiguousarray(array), matrix)


def _asymmetric_volume() -> Volume:
    rng = np.random.default_rng(0)
    array = rng.normal(100, 5, (6, 30, 40)).astype(np.float32)
    array[:, 5:12, 3:9] += 500  # off-centre in both directions
    matrix = np.array([[-1.5, 0, 0, 10], [0, 1.2, 0, -20], [0, 0, 4.0, 5], [0, 0, 0, 1]])
    return Volume(array, matrix)  # the CHAOS layout: columns toward -R, rows toward +A


@pytest.mark.parametrize("orientation", [InPlaneOrientation(*f) for f in itertools.product([False, True], repeat=3)])
def test_apply_then_undo_is_the_identity(orientation):
    slices = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    np.testing.assert_array_equal(orientation.undo(orientation.apply(slices)), slices)


def test_chaos_layout_is_canonical():
    assert canonical_orientation(_asymmetric_volume()) == InPlaneOrientation(False, False, False)


@pytest.mark.parametrize("flip_i,flip_j,swap_ij", list(itertools.product([False, True], repeat=3)))
def test_every_storage_gives_the_same_canonical_slices(flip_i, flip_j, swap_ij):
    original = _asymmetric_volume()
    other = restored(original, flip_i, flip_j, swap_ij)
    reference = canonical_orientation(original).apply(to_slice_first(original.array, 0))
    seen = canonical_orientation(other).apply(to_slice_first(other.array, 0))
    np.testing.assert_array_equal(seen, reference)


def test_dicom_and_totalsegmentator_layouts_are_recognised(ct_sample_dir):
    from LiverUNetLib.image_io import read_image

    assert canonical_orientation(read_image(ct_sample_dir / "dicom")) == InPlaneOrientation(False, True, False)


def test_segmentation_is_the_same_physical_mask_however_the_file_is_stored(tmp_path):
    model = load_trained_phantom_model(tmp_path)
    original = _asymmetric_volume()
    expected = segment_volume(original, model, InferenceConfig(device="cpu")).mask
    for flags in [(True, False, False), (False, True, False), (True, True, True)]:
        other = restored(original, *flags)
        mask = segment_volume(other, model, InferenceConfig(device="cpu")).mask
        assert mask.same_grid(other)
        np.testing.assert_array_equal(restored(expected, *flags).array, mask.array)
