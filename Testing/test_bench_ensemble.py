"""bench/studies/ensemble_gain.py, error_distance.py and slice_smoothing.py: probability cache,
post-processing, error split, smoothing across slices."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ensemble_gain = pytest.importorskip("bench.studies.ensemble_gain")
error_distance = pytest.importorskip("bench.studies.error_distance")
slice_smoothing = pytest.importorskip("bench.studies.slice_smoothing")

from bench.accuracy import fold_model_path, fold_of  # noqa: E402
from engine_helpers import box_volume, one_thread, pointwise_model  # noqa: E402, F401 - autouse fixture
from LiverUNetLib.inference import InferenceConfig, segment_volume  # noqa: E402
from LiverUNetLib.model_file import save_model  # noqa: E402


def _fold_model(results: Path, k: int) -> Path:
    """A pointwise model (it finds the phantom's bright box) as subject 3's fold model of tag 't'."""
    model = fold_model_path(results, k, "t", fold_of("3"))
    model.parent.mkdir(parents=True)
    save_model(pointwise_model(), model)
    return model


def test_held_out_probability_is_cached_and_recomputed_when_the_fold_model_changes(tmp_path):
    image, box = box_volume()
    model = _fold_model(tmp_path, 1)
    cache = tmp_path / "cache"
    first = ensemble_gain.held_out_probability(tmp_path, "t", "3", image, cache)
    assert first.shape == image.array.shape and (cache / "t_s3.npy").exists()
    assert ensemble_gain.liver_mask(first)[box].all() and not ensemble_gain.liver_mask(first)[~box].any()
    np.save(cache / "t_s3.npy", np.zeros_like(first, dtype=np.float16))  # stands for a stale cached map
    assert not ensemble_gain.held_out_probability(tmp_path, "t", "3", image, cache).any(), "the cache is read"
    later = (cache / "t_s3.npy").stat().st_mtime + 10
    os.utime(model, (later, later))  # the fold model was retrained after the map was cached
    np.testing.assert_array_equal(ensemble_gain.held_out_probability(tmp_path, "t", "3", image, cache), first)


def test_sparse_label_models_are_read_and_cached_apart_from_the_dense_ones(tmp_path):
    image, box = box_volume()
    _fold_model(tmp_path, 5)
    cache = tmp_path / "cache"
    probability = ensemble_gain.held_out_probability(tmp_path, "t", "3", image, cache, k=5)
    assert ensemble_gain.liver_mask(probability)[box].all()
    assert [p.name for p in cache.iterdir()] == ["k5_t_s3.npy"]  # no dense (k=1) model was needed or cached


def test_the_cache_holds_the_network_s_own_probability_not_a_smoothed_one(tmp_path):
    image, _ = box_volume()
    model = _fold_model(tmp_path, 1)
    cached = ensemble_gain.held_out_probability(tmp_path, "t", "3", image, tmp_path / "cache")
    raw = segment_volume(image, model, InferenceConfig(device="cpu", return_probability=True, slice_smoothing=False))
    smoothed = segment_volume(image, model, InferenceConfig(device="cpu", return_probability=True))
    np.testing.assert_array_equal(cached, raw.probability.array.astype(np.float16).astype(np.float32))
    assert not np.array_equal(cached, smoothed.probability.array.astype(np.float16).astype(np.float32))


def test_liver_mask_smooths_across_the_given_slice_axis_first_and_leaves_its_input_alone():
    probability = np.zeros((8, 5, 3), np.float32)  # slice axis last here
    probability[1:7, 1:4, :] = 0.9
    probability[2, 2, 1] = 0.3  # an unsure slice inside the liver
    before = probability.copy()
    plain = ensemble_gain.liver_mask(probability)
    smoothed = ensemble_gain.liver_mask(probability, smoothing_axis=2)
    np.testing.assert_array_equal(probability, before)
    assert not plain[2, 2, 1] and smoothed[2, 2, 1]
    # along axis 0 the liver's first and last slices fade to 0.675 and stay
    assert ensemble_gain.liver_mask(probability, smoothing_axis=0)[[1, 6], 2, 0].all()


def test_slice_smoothing_bench_scores_both_variants_and_counts_the_paired_change():
    liver, box = box_volume(slices=9, box=((2, 7), (6, 20), (4, 14)))
    liver = liver.with_array(box.astype(np.uint8))
    probability = np.where(box, 0.9, 0.05).astype(np.float32)
    axis = liver.slice_axis()
    hole = [slice(6, 20), slice(4, 14)]
    hole.insert(axis, 4)
    probability[tuple(hole)] = 0.4  # one unsure slice through the whole liver
    row = slice_smoothing.score_variants(probability, liver, axis)
    assert row["smoothed"]["dice"] == 1.0 and row["plain"]["dice"] < 0.95
    summary = slice_smoothing.summarise({"a": row, "b": {"plain": row["smoothed"], "smoothed": row["plain"]}})
    assert summary["dice_change"]["raised"] == 1 and summary["dice_change"]["lowered"] == 1
    assert summary["dice_change"]["mean"] == 0.0
    assert summary["plain"]["dice"] == summary["smoothed"]["dice"]


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


def test_the_start_network_check_scores_what_the_fill_guard_scores():
    """bench/studies/start_network_check.py: the Dice of network 0 on the painted and liver-free slices."""
    start_network_check = pytest.importorskip("bench.studies.start_network_check")
    from LiverUNetLib.labels import sparse_label_from_mask

    image, liver = box_volume()
    painted = sparse_label_from_mask(image, image.with_array(liver.astype(np.uint8)), dense=True).keep_every_k(2)
    model = pointwise_model()
    assert start_network_check.start_dice(model, image, painted) > 0.95  # the bright box is found
    dark = image.with_array(np.full_like(image.array, image.array.min()))  # nothing bright: the liver is missed
    dark.metadata["modality"] = "MR"  # a uniform image tells no modality by itself
    assert start_network_check.start_dice(model, dark, painted) < 0.1
