"""Metrics in mm on real grids, edge cases, and the CHAOS golden example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.image_io import read_image
from LiverUNetLib.metrics import METRIC_KEYS, evaluate, mean_metrics, surface_voxels
from LiverUNetLib.volume import Volume


def grid(spacing=(1.0, 1.0, 1.0), rotation=None) -> np.ndarray:
    m = np.eye(4)
    r = np.eye(3) if rotation is None else rotation
    m[:3, :3] = r @ np.diag(spacing)
    m[:3, 3] = [3.0, -4.0, 5.0]
    return m


def box(shape, lo, hi) -> np.ndarray:
    a = np.zeros(shape, np.uint8)
    a[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return a


def test_identical_masks():
    m = Volume(box((10, 12, 14), (2, 3, 4), (8, 9, 10)), grid((0.5, 0.7, 2.0)))
    r = evaluate(m, m)
    assert r.dice == 1.0 and r.iou == 1.0
    assert r.hd95_mm == r.assd_mm == r.mssd_mm == r.ravd_percent == 0.0
    assert r.volume_ml == pytest.approx(6 * 6 * 6 * 0.5 * 0.7 * 2.0 / 1000)
    assert set(METRIC_KEYS) <= set(r.to_dict())


def test_shift_along_anisotropic_axis_is_in_mm():
    """Shift a box by one voxel along K (5 mm slices): the moving faces are 5 mm apart."""
    shape = (12, 10, 10)
    ref = Volume(box(shape, (2, 2, 2), (8, 8, 8)), grid((1.0, 1.0, 5.0)))
    pred = ref.with_array(box(shape, (3, 2, 2), (9, 8, 8)))
    r = evaluate(ref, pred)
    assert r.mssd_mm == pytest.approx(5.0)
    assert r.dice == pytest.approx(2 * 5 / 12)
    assert r.iou == pytest.approx(5 / 7)
    assert r.ravd_percent == 0.0
    assert 0 < r.assd_mm < 5.0


def test_oblique_grid_gives_the_same_distances():
    c, s = np.cos(0.5), np.sin(0.5)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    shape = (10, 11, 12)
    a, b = box(shape, (2, 2, 2), (7, 8, 9)), box(shape, (3, 2, 1), (8, 9, 9))
    straight = evaluate(Volume(a, grid((0.8, 1.1, 3.0))), Volume(b, grid((0.8, 1.1, 3.0))))
    oblique = evaluate(Volume(a, grid((0.8, 1.1, 3.0), rot)), Volume(b, grid((0.8, 1.1, 3.0), rot)))
    for key in ("dice", "hd95_mm", "assd_mm", "mssd_mm", "volume_ml"):
        assert getattr(oblique, key) == pytest.approx(getattr(straight, key), rel=1e-6)


def test_sheared_grid_uses_exact_nearest_points():
    """A non-orthogonal grid (gantry tilt): distances are measured in physical space."""
    m = np.eye(4)
    m[:3, :3] = np.array([[1.0, 0, 0], [0, 1.0, 0.5], [0, 0, 2.0]])
    shape = (6, 6, 6)
    ref = Volume(box(shape, (1, 1, 1), (4, 4, 4)), m)
    pred = ref.with_array(box(shape, (2, 1, 1), (5, 4, 4)))
    r = evaluate(ref, pred)
    # One voxel along K moves a point by the K column of the matrix: (0, 0.5, 2) -> |.| = sqrt(4.25)
    assert r.mssd_mm == pytest.approx(math.sqrt(4.25))


def organisers_surface(mask: np.ndarray) -> np.ndarray:
    """mask ^ binary_erosion(mask, 6-connected, border_value=1), written out in numpy."""
    padded = np.pad(mask, 1, constant_values=True)
    eroded = mask.copy()
    for axis in range(3):
        for step in (-1, 1):
            eroded &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~eroded


def test_surface_matches_organisers_definition():
    rng = np.random.default_rng(5)
    a = rng.random((9, 10, 11)) > 0.4
    a[0:3, :, 2:5] = True  # a block touching the image border
    np.testing.assert_array_equal(surface_voxels(a), organisers_surface(a))
    block = np.zeros((5, 6, 7), bool)
    block[0:3, :, 2:5] = True
    surf = surface_voxels(block)
    assert not surf[0, 3, 3]  # the face on the image border is not surface
    assert surf[2, 3, 3]  # the inner face is


def test_empty_masks():
    shape = (5, 5, 5)
    empty = Volume(np.zeros(shape, np.uint8), grid())
    full = empty.with_array(box(shape, (1, 1, 1), (3, 3, 3)))
    both = evaluate(empty, empty)
    assert (both.dice, both.iou, both.assd_mm, both.mssd_mm, both.hd95_mm, both.ravd_percent) == (1, 1, 0, 0, 0, 0)
    missed = evaluate(full, empty)
    assert missed.dice == 0 and math.isinf(missed.assd_mm) and math.isinf(missed.hd95_mm)
    assert missed.ravd_percent == 100.0
    spurious = evaluate(empty, full)
    assert spurious.dice == 0 and math.isinf(spurious.mssd_mm) and math.isinf(spurious.ravd_percent)


def test_label_value_selects_one_label():
    shape = (8, 8, 8)
    labels = box(shape, (1, 1, 1), (4, 4, 4)) + 2 * box(shape, (5, 5, 5), (7, 7, 7))
    ref = Volume(labels, grid())
    pred = ref.with_array((labels == 1).astype(np.uint8))
    assert evaluate(ref, pred, label_value=1).dice == 1.0
    assert evaluate(ref, pred).dice < 1.0


def test_different_grids_are_refused():
    a = Volume(box((6, 6, 6), (1, 1, 1), (4, 4, 4)), grid())
    moved = Volume(a.array, grid())
    moved.ijk_to_ras[0, 3] += 1.0
    with pytest.raises(LiverUNetError, match="grid"):
        evaluate(a, moved)
    with pytest.raises(LiverUNetError, match="grid"):
        evaluate(a, Volume(np.zeros((6, 6, 7), np.uint8), grid()))


def test_mean_metrics():
    m = Volume(box((6, 6, 6), (1, 1, 1), (4, 4, 4)), grid())
    rows = [evaluate(m, m), evaluate(m, m.with_array(np.zeros((6, 6, 6), np.uint8)))]
    mean = mean_metrics(rows)
    assert mean["dice"] == 0.5
    assert math.isinf(mean["assd_mm"])


@pytest.mark.data
def test_golden_chaos_ct_example(ct_sample_dir):
    """The organisers' published scores of example_segmentation against liver_gt."""
    reference = read_image(ct_sample_dir / "liver_gt.nii.gz")
    prediction = read_image(ct_sample_dir / "example_segmentation.nii.gz")
    r = evaluate(reference, prediction)
    assert round(r.dice, 3) == 0.978
    assert r.assd_mm == pytest.approx(0.734, rel=0.05)
    assert r.mssd_mm == pytest.approx(14.0, rel=0.05)
    assert r.ravd_percent == pytest.approx(0.665, abs=0.01)
    assert r.reference_volume_ml == pytest.approx(1417, rel=0.01)
    assert r.hd95_mm < r.mssd_mm


def test_mask_filling_the_whole_image_still_has_a_surface():
    """Under the organisers' rule such a mask has no surface; its image-border voxels are used."""
    shape = (6, 6, 6)
    full = Volume(np.ones(shape, np.uint8), grid())
    inner = full.with_array(box(shape, (1, 1, 1), (5, 5, 5)))
    r = evaluate(full, inner)
    assert r.mssd_mm == pytest.approx(math.sqrt(3.0))  # corner voxel to the inner box's corner
    assert 0 < r.assd_mm < r.mssd_mm
