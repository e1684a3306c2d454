"""bench/ensemble_gain.py and bench/error_distance.py: probability cache, post-processing, error split."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ensemble_gain = pytest.importorskip("bench.ensemble_gain")
error_distance = pytest.importorskip("bench.error_distance")

from bench.accuracy import fold_model_path, fold_of  # noqa: E402
from engine_helpers import box_volume, one_thread, pointwise_model  # noqa: E402, F401 - autouse fixture
from LiverUNetLib.model_file import save_model  # noqa: E402


def test_held_out_probability_is_cached_and_recomputed_when_the_fold_model_changes(tmp_path):
    image, box = box_volume()
    model = fold_model_path(tmp_path, 1, "t", fold_of("3"))
    model.parent.mkdir(parents=True)
    save_model(pointwise_model(), model)
    cache = tmp_path / "cache"
    first = ensemble_gain.held_out_probability(tmp_path, "t", "3", image, cache)
    assert first.shape == image.array.shape and (cache / "t_s3.npy").exists()
    assert ensemble_gain.liver_mask(first)[box].all() and not ensemble_gain.liver_mask(first)[~box].any()
    np.save(cache / "t_s3.npy", np.zeros_like(first, dtype=np.float16))  # stands for a stale cached map
    assert not ensemble_gain.held_out_probability(tmp_path, "t", "3", image, cache).any(), "the cache is read"
    later = (cache / "t_s3.npy").stat().st_mtime + 10
    os.utime(model, (later, later))  # the fold model was retrained after the map was cached
    np.testing.assert_array_equal(ensemble_gain.held_out_probability(tmp_path, "t", "3", image, cache), first)


def test_liver_mask_thresholds_at_one_half_and_keeps_the_largest_region():
    probability = np.zeros((3, 10, 10), np.float32)
    probability[:, 1:6, 1:6] = 0.9
    probability[1, 8, 8] = 0.95  # a stray voxel away from the liver
    probability[1, 1, 6] = 0.49  # just below the threshold
    mask = ensemble_gain.liver_mask(probability)
    assert mask.sum() == 75 and not mask[1, 8, 8] and not mask[1, 1, 6]
    assert not ensemble_gain.liver_mask(np.zeros_like(probability)).any()


def test_error_split_tells_a_loose_outline_from_a_false_region():
    reference = np.zeros((2, 40, 40), bool)
    reference[:, 10:30, 10:30] = True
    prediction = reference.copy()
    prediction[:, 10:30, 30] = True  # one column too wide: 1 mm from the outline
    prediction[0, 10:30, 10] = False  # one column missed at the edge
    prediction[1, 35:39, 35:39] = True  # a false region 5 mm and more away
    split = error_distance.error_split(reference, prediction, (1.0, 1.0), near_mm=3.0)
    assert split == {"missed_near": 20, "missed_far": 0, "false_near": 40, "false_far": 16, "liver": 800}
    # a slice without liver has no outline: everything on it is far
    empty = np.zeros((1, 20, 20), bool)
    stray = empty.copy()
    stray[0, 5, 5] = True
    assert error_distance.error_split(empty, stray, (1.0, 1.0), 3.0)["false_far"] == 1
