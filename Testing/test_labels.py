"""Sparse labels: annotated slices along the superior axis, keep_every_k, declared empty slices, and the
slices beyond a painting taken as liver-free."""

from __future__ import annotations

import numpy as np
import pytest

from engine_helpers import box_volume
from engine_helpers import one_thread  # noqa: F401 - autouse fixture
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.labels import (
    MIN_PAINTED_EXTENT_MM,
    SparseLabel,
    liver_free_beyond_painting,
    liver_slices,
    sparse_label_from_mask,
)
from LiverUNetLib.volume import Volume


def painted(orientation: str, painted_slices=(3, 5)):
    """Image with a box on slices 2..9 (slice-first); the label paints only ``painted_slices``."""
    image, box = box_volume(orientation, slices=12, box=((2, 10), (6, 20), (4, 14)))
    axis = image.slice_axis()
    label = np.zeros(box.shape, np.uint8)
    index = [slice(None)] * 3
    index[axis] = list(painted_slices)
    label[tuple(index)] = box[tuple(index)]
    return image, image.with_array(label), axis


@pytest.mark.parametrize("orientation, axis", [("axial", 0), ("sagittal", 1), ("coronal", 1), ("coronal_i_superior", 2)])
def test_annotated_slices_along_the_superior_axis(orientation, axis):
    image, label, found_axis = painted(orientation)
    assert found_axis == axis
    sparse = sparse_label_from_mask(image, label)
    assert sparse.slice_axis == axis
    assert sparse.annotated.tolist() == [3, 5]
    assert sparse.mask.dtype == bool and sparse.mask.shape == image.array.shape
    np.testing.assert_array_equal(sparse.mask, label.array > 0)
    weights = sparse.slice_weights()
    assert weights.shape == (12,)
    assert weights.tolist() == [1.0 if s in (3, 5) else 0.0 for s in range(12)]


def test_sagittal_annotation_is_not_read_along_k():
    # In a sagittal scan K runs left-right; painting two sagittal-K planes must not be what counts.
    image, label, axis = painted("sagittal", painted_slices=(4,))
    sparse = sparse_label_from_mask(image, label)
    k_planes = np.flatnonzero(label.array.any(axis=(1, 2)))
    assert k_planes.size > 1  # the painted slice crosses many K planes
    assert sparse.annotated.tolist() == [4]


def test_label_value_picks_one_value():
    image, box = box_volume("axial", slices=6, box=((1, 5), (6, 20), (4, 14)))
    values = np.zeros(box.shape, np.uint8)
    values[1][box[1]] = 2
    values[3][box[3]] = 5
    values[4][box[4]] = 5
    sparse = sparse_label_from_mask(image, image.with_array(values), label_value=5)
    assert sparse.annotated.tolist() == [3, 4]
    assert not sparse.mask[1].any()
    every = sparse_label_from_mask(image, image.with_array(values))
    assert every.annotated.tolist() == [1, 3, 4]


@pytest.mark.parametrize("orientation", ["axial", "sagittal"])
def test_declared_empty_slices_and_background_mask(orientation):
    image, label, axis = painted(orientation)
    background = np.zeros(image.array.shape, bool)
    index = [slice(None)] * 3
    index[axis] = 11
    background[tuple(index)] = True  # a "not liver" stroke on slice 11
    sparse = sparse_label_from_mask(image, label, empty_slices=[0, 1], background_mask=background)
    assert sparse.annotated.tolist() == [0, 1, 3, 5, 11]
    # declared empty slices stay background in the mask: they teach "no liver here"
    for s in (0, 1, 11):
        index[axis] = s
        assert not sparse.mask[tuple(index)].any()


def test_empty_slice_out_of_range():
    image, label, _ = painted("axial")
    with pytest.raises(LiverUNetError, match=r"\[12\] are outside 0..11"):
        sparse_label_from_mask(image, label, empty_slices=[12])
    with pytest.raises(LiverUNetError, match="outside"):
        sparse_label_from_mask(image, label, empty_slices=[-1])


def test_background_mask_on_another_grid():
    image, label, _ = painted("axial")
    with pytest.raises(LiverUNetError, match="not liver"):
        sparse_label_from_mask(image, label, background_mask=np.zeros((3, 3, 3), bool))


def test_dense_label_annotates_every_slice():
    image, label, _ = painted("coronal")
    sparse = sparse_label_from_mask(image, label, dense=True)
    assert sparse.annotated.tolist() == list(range(12))


def test_empty_label_is_refused_even_with_declared_empty_slices():
    image, label, _ = painted("axial")
    empty = image.with_array(np.zeros(image.array.shape, np.uint8))
    with pytest.raises(LiverUNetError, match="no liver to learn from"):
        sparse_label_from_mask(image, empty)
    with pytest.raises(LiverUNetError, match="no liver"):
        sparse_label_from_mask(image, empty, empty_slices=[0, 1, 2])
    with pytest.raises(LiverUNetError, match="value 7"):
        sparse_label_from_mask(image, label, label_value=7)


def test_label_on_another_grid_is_refused():
    image, label, _ = painted("axial")
    other_shape = Volume(np.zeros((12, 30, 33), np.uint8), image.ijk_to_ras)
    with pytest.raises(LiverUNetError, match="differs from the image's grid"):
        sparse_label_from_mask(image, other_shape)
    shifted = image.ijk_to_ras.copy()
    shifted[:3, 3] += (0.0, 0.0, 2.0)
    with pytest.raises(LiverUNetError, match="reference geometry"):
        sparse_label_from_mask(image, Volume(label.array, shifted))
    with pytest.raises(LiverUNetError, match="3D"):
        sparse_label_from_mask(image, Volume(label.array[0], image.ijk_to_ras))


def test_bad_image_is_refused_first():
    image, label, _ = painted("axial")
    broken = image.array.copy()
    broken[0, 0, 0] = np.nan
    with pytest.raises(LiverUNetError, match="NaN"):
        sparse_label_from_mask(image.with_array(broken), label)


def test_sparse_label_checks_indices():
    with pytest.raises(LiverUNetError, match=r"0\.\.3"):
        SparseLabel(np.zeros((4, 2, 2)), [1, 4], 0)
    with pytest.raises(LiverUNetError, match=r"0\.\.3"):
        SparseLabel(np.zeros((2, 2, 4)), [-1], 2)
    label = SparseLabel(np.zeros((4, 2, 2)), [3, 1, 3], 0)
    assert label.annotated.tolist() == [1, 3] and label.annotated_count == 2


def dense_column(slices=25, axis=0):
    """A dense label whose liver covers slices 5..29 of 35 along ``axis``."""
    shape = [4, 4]
    shape.insert(axis, slices + 10)
    mask = np.zeros(shape, bool)
    index = [slice(1, 3)] * 3
    index[axis] = slice(5, 5 + slices)
    mask[tuple(index)] = True
    return SparseLabel(mask, np.arange(slices + 10), axis)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_keep_every_k_along_the_slice_axis(axis):
    label = dense_column(axis=axis)
    kept = label.keep_every_k(5)
    liver = np.arange(5, 30)
    assert kept.annotated.tolist() == liver[2::5].tolist() == [7, 12, 17, 22, 27]
    assert kept.slice_axis == axis
    assert liver_slices(kept.mask, axis).tolist() == kept.annotated.tolist()
    # voxels on kept slices are unchanged
    index = [slice(None)] * 3
    index[axis] = kept.annotated
    np.testing.assert_array_equal(kept.mask[tuple(index)], label.mask[tuple(index)])
    # declared empty slices (0..4, 30..34) are dropped too
    assert not set(kept.annotated.tolist()) & {0, 1, 2, 3, 4, 30, 31, 32, 33, 34}


def test_keep_every_k_offset_and_edge_cases():
    label = dense_column()
    assert label.keep_every_k(5, offset=0).annotated.tolist() == [5, 10, 15, 20, 25]
    assert label.keep_every_k(1).annotated.tolist() == list(range(35))
    # an offset past the liver keeps its middle slice rather than nothing
    assert label.keep_every_k(100, offset=40).annotated.tolist() == [17]
    # k larger than the liver: the middle of the first stride
    assert label.keep_every_k(40).annotated.tolist() == [25]
    with pytest.raises(LiverUNetError, match="at least 1"):
        label.keep_every_k(0)
    with pytest.raises(LiverUNetError, match="no liver"):
        SparseLabel(np.zeros((5, 2, 2)), [0, 1], 0).keep_every_k(2)


def test_keep_every_k_on_a_real_style_label_from_a_sagittal_volume():
    image, box = box_volume("sagittal", slices=12, box=((2, 10), (6, 20), (4, 14)))
    sparse = sparse_label_from_mask(image, image.with_array(box.astype(np.uint8)))
    assert sparse.annotated.tolist() == list(range(2, 10))
    assert sparse.keep_every_k(3).annotated.tolist() == [3, 6, 9]


def test_label_volume_may_be_float_or_bool():
    image, box = box_volume("axial", slices=6, box=((1, 3), (6, 20), (4, 14)))
    for values in (box.astype(np.float32) * 1.0, box):
        sparse = sparse_label_from_mask(image, image.with_array(values))
        assert sparse.annotated.tolist() == [1, 2]


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 3, 5, 7])
def test_slices_beyond_a_regular_painting_are_liver_free_and_never_hold_liver(axis, k):
    """The protocol's guarantee: painting every k-th liver slice, the liver ends within k - 1 slices of it."""
    dense = dense_column(axis=axis)  # liver on slices 5..29 of 35
    for offset in range(k):
        painted = dense.keep_every_k(k, offset=offset)
        label = liver_free_beyond_painting(painted, slice_spacing_mm=10.0)
        added = np.setdiff1d(label.annotated, painted.annotated)
        first, last = painted.annotated[0], painted.annotated[-1]
        assert added.tolist() == [s for s in range(35) if s <= first - k or s >= last + k]
        assert not np.take(dense.mask, added, axis=axis).any()  # no added slice holds liver
        assert not np.take(label.mask, added, axis=axis).any()
        # the painted slices keep their paint; the painting itself is not changed
        np.testing.assert_array_equal(np.take(label.mask, painted.annotated, axis=axis),
                                      np.take(painted.mask, painted.annotated, axis=axis))
        assert label.slice_axis == axis


def test_the_largest_gap_sets_the_margin():
    mask = np.zeros((60, 2, 2), bool)
    mask[10:50] = True
    painted = SparseLabel(np.where(np.isin(np.arange(60), [12, 14, 22, 30])[:, None, None], mask, False),
                          [12, 14, 22, 30], 0)
    label = liver_free_beyond_painting(painted, slice_spacing_mm=10.0)
    # gaps 2, 8, 8: 8 slices on each side
    assert label.annotated.tolist() == [0, 1, 2, 3, 4, 12, 14, 22, 30] + list(range(38, 60))


def test_a_short_or_single_slice_painting_may_cover_part_of_the_liver_and_adds_nothing():
    dense = dense_column()  # liver on slices 5..29
    single = dense.keep_every_k(100, offset=40)
    assert liver_free_beyond_painting(single, 10.0) is single
    short = SparseLabel(np.where(np.isin(np.arange(35), [15, 17, 19])[:, None, None], dense.mask, False), [15, 17, 19], 0)
    # 4 slices apart at 10 mm spans 40 mm: too short to be the whole liver
    assert liver_free_beyond_painting(short, 10.0) is short
    assert liver_free_beyond_painting(short, MIN_PAINTED_EXTENT_MM / 4).annotated.size > 3
    # a dense label (every slice annotated) comes back with the same slices and voxels
    dense_out = liver_free_beyond_painting(dense, 10.0)
    assert dense_out.annotated.tolist() == list(range(35))
    np.testing.assert_array_equal(dense_out.mask, dense.mask)


def test_declared_empty_slices_are_kept_and_not_counted_as_painted_liver():
    dense = dense_column()
    painted = dense.keep_every_k(5)  # 7, 12, 17, 22, 27
    with_empty = SparseLabel(painted.mask, np.union1d(painted.annotated, [33]), 0)
    label = liver_free_beyond_painting(with_empty, 10.0)
    assert label.annotated.tolist() == [0, 1, 2, 7, 12, 17, 22, 27, 32, 33, 34]


def test_liver_free_slices_are_drawn_as_often_as_in_a_fully_labelled_scan():
    """Each painted slice stands for the gap around it; each liver-free slice for itself."""
    painted = dense_column().keep_every_k(5)  # 7, 12, 17, 22, 27 of 35
    label = liver_free_beyond_painting(painted, 10.0)
    weights = dict(zip(label.annotated.tolist(), label.annotated_weights().tolist()))
    assert all(weights[s] == 1.0 for s in painted.annotated)
    assert all(weights[s] == pytest.approx(0.2) for s in (0, 1, 2, 32, 33, 34))
    # the unchanged label draws every slice alike
    assert painted.sampling_weights is None and painted.annotated_weights().tolist() == [1.0] * 5


def test_declared_slices_keep_their_weight_when_liver_free_slices_join():
    painted = dense_column().keep_every_k(5)
    declared = SparseLabel(painted.mask, [7, 12, 17, 22, 27, 33], 0, [1, 1, 1, 1, 1, 3])
    label = liver_free_beyond_painting(declared, 10.0)
    assert dict(zip(label.annotated.tolist(), label.annotated_weights().tolist()))[33] == 3.0


@pytest.mark.parametrize("annotated, weights, words", [
    ([3, 1], [1.0, 1.0], "sorted, distinct"),
    ([1, 1], [1.0, 1.0], "sorted, distinct"),
    ([1, 3], [1.0], "one weight each"),
    ([1, 3], [1.0, 0.0], "positive"),
    ([1, 3], [1.0, float("nan")], "positive"),
])
def test_sampling_weights_are_checked(annotated, weights, words):
    with pytest.raises(LiverUNetError, match=words):
        SparseLabel(np.zeros((5, 2, 2), bool), annotated, 0, weights)
