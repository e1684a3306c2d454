"""Painted-slice detection on real segmentations (slicer-core), axial and non-axial volumes."""

from __future__ import annotations

import numpy as np
import pytest

from slicer_harness import (addSegmentation, addVolume, blobImage, mrml, obliqueIjkToRas,  # noqa: F401
                            paintSegment, requires_slicer_core)

pytestmark = requires_slicer_core


def test_painted_axial_slices_are_found(mrml):
    from LiverUNetSlicerLib.painted import paintedSlices

    image, mask = blobImage((12, 20, 24))
    volume = addVolume(image, obliqueIjkToRas(), "axial")  # K is closest to superior
    seg = addSegmentation(volume)
    sparse = np.zeros_like(mask)
    sparse[[3, 6, 8]] = mask[[3, 6, 8]]
    segmentId = paintSegment(seg, volume, sparse, "liver")
    info = paintedSlices(volume, seg, segmentId)
    assert info.sliceAxis == 0 and info.indices == (3, 6, 8) and info.sliceCount == 12
    assert info.describe() == "3 of 12 slices painted"


def test_painted_slices_of_a_coronal_volume_use_the_right_axis(mrml):
    from LiverUNetSlicerLib.painted import paintedSlices

    # I -> R, J -> S (rows run superior), K -> A: the superior axis is J, numpy axis 1
    coronal = np.array([[1.0, 0, 0, 0], [0, 0, 2.0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1]])
    image, mask = blobImage((8, 16, 10))
    volume = addVolume(image, coronal, "coronal")
    seg = addSegmentation(volume)
    sparse = np.zeros_like(mask)
    sparse[:, [5, 9]] = mask[:, [5, 9]]
    segmentId = paintSegment(seg, volume, sparse, "liver")
    info = paintedSlices(volume, seg, segmentId)
    assert info.sliceAxis == 1 and info.indices == (5, 9) and info.sliceCount == 16


def test_empty_segment_counts_zero_but_cannot_train(mrml):
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.nodes import volumeFromNode
    from LiverUNetSlicerLib.painted import paintedSlices, segmentMask, sparseLabelFromSegment

    image, _ = blobImage((6, 10, 12))
    volume = addVolume(image, name="v")
    seg = addSegmentation(volume)
    segmentId = seg.GetSegmentation().AddEmptySegment("liver", "liver")
    assert paintedSlices(volume, seg, segmentId).count == 0
    with pytest.raises(LiverUNetError, match="has no painted slice"):
        sparseLabelFromSegment(volumeFromNode(volume), segmentMask(volume, seg, segmentId), "Segment 'liver'")


def test_segment_painted_on_another_grid_is_refused(mrml):
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.painted import paintedSlices

    image, mask = blobImage((6, 10, 12))
    volume = addVolume(image, name="fine")
    coarse = addVolume(np.zeros((3, 5, 6), np.int16), np.diag([2.0, 2.0, 2.0, 1.0]), "coarse")
    seg = addSegmentation(coarse)
    painted = np.zeros((3, 5, 6), bool)
    painted[1, 1:4, 1:4] = True
    segmentId = paintSegment(seg, coarse, painted, "liver")
    with pytest.raises(LiverUNetError, match="different voxel grid"):
        paintedSlices(volume, seg, segmentId)
    assert paintedSlices(coarse, seg, segmentId).indices == (1,)


def test_missing_segmentation_or_segment(mrml):
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.painted import paintedSlices

    image, _ = blobImage((6, 10, 12))
    volume = addVolume(image, name="v")
    with pytest.raises(LiverUNetError, match="No segmentation is selected"):
        paintedSlices(volume, None, "x")
    with pytest.raises(LiverUNetError, match="no segment with id 'x'"):
        paintedSlices(volume, addSegmentation(volume), "x")
