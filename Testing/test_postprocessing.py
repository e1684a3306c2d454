"""Post-processing of a liver probability: smoothing across slices (largest component and hole filling are
covered through ``segment_volume`` in test_inference.py)."""

from __future__ import annotations

import numpy as np

from LiverUNetLib.postprocessing import SLICE_SMOOTHING_WEIGHTS, smooth_across_slices


def test_each_slice_is_averaged_with_its_neighbours_and_the_ends_count_themselves():
    rng = np.random.default_rng(0)
    probability = rng.random((6, 4, 5)).astype(np.float32)
    padded = np.concatenate([probability[:1], probability, probability[-1:]])
    side, centre, other_side = SLICE_SMOOTHING_WEIGHTS
    expected = side * padded[:-2] + centre * padded[1:-1] + other_side * padded[2:]
    smoothed = smooth_across_slices(probability.copy())
    np.testing.assert_allclose(smoothed, expected, rtol=1e-6)
    assert smoothed.dtype == np.float32 and abs(sum(SLICE_SMOOTHING_WEIGHTS) - 1.0) < 1e-12


def test_smoothing_works_in_place_and_leaves_a_single_slice_alone():
    probability = np.zeros((3, 2, 2), dtype=np.float32)
    probability[1] = 1.0
    result = smooth_across_slices(probability)
    assert result is probability
    np.testing.assert_allclose(probability[:, 0, 0], [0.25, 0.5, 0.25])
    single = np.full((1, 3, 3), 0.7, dtype=np.float32)
    np.testing.assert_array_equal(smooth_across_slices(single.copy()), single)
    # along another axis: the same as moving that axis first
    volume = np.random.default_rng(1).random((4, 5, 6)).astype(np.float32)
    along_last = smooth_across_slices(volume.copy(), axis=2)
    np.testing.assert_allclose(along_last, np.moveaxis(smooth_across_slices(np.moveaxis(volume, 2, 0).copy()), 0, 2))


def test_a_flickering_false_region_goes_and_a_gap_between_confident_slices_closes():
    """What the step is for: one slice's doubtful region is outvoted; a weak slice inside the organ is kept."""
    probability = np.full((7, 1, 2), 0.05, dtype=np.float32)
    probability[3, 0, 0] = 0.8  # a region on one slice only (a bowel loop, say)
    probability[1:6, 0, 1] = 0.9
    probability[3, 0, 1] = 0.4  # a slice where the liver looked unsure
    raw = probability >= 0.5
    smoothed = smooth_across_slices(probability) >= 0.5
    assert raw[3, 0, 0] and not smoothed[3, 0, 0]
    assert not raw[3, 0, 1] and smoothed[3, 0, 1]
    np.testing.assert_array_equal(smoothed[:, 0, 1], [False, True, True, True, True, True, False])
