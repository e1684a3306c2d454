"""A "Not liver" segment painted beside the liver becomes declared empty slices for training."""

from __future__ import annotations

import numpy as np

from slicer_harness import addSegmentation, addVolume, blobImage, mrml, paintSegment, requires_slicer_core  # noqa: F401

pytestmark = [*requires_slicer_core]


def test_not_liver_segment_is_written_as_empty_label_value(mrml, tmp_path):
    from LiverUNetLib.image_io import read_image
    from LiverUNetLib.labels import sparse_label_from_mask
    from LiverUNetSlicerLib import LiverUNetLogic, ModelLibrary, TrainingCaseNodes

    image, liver = blobImage()
    volume = addVolume(image)
    segmentation = addSegmentation(volume)
    painted = np.zeros_like(liver)
    painted[[4, 6]] = liver[[4, 6]]
    liverId = paintSegment(segmentation, volume, painted, "liver", "Liver")
    above = np.zeros_like(liver)
    above[0, 5:10, 5:10] = 1  # a stroke on slice 0 says: no liver on this slice
    paintSegment(segmentation, volume, above, "notliver", "Not liver")

    logic = LiverUNetLogic(modelLibrary=ModelLibrary(tmp_path / "models"), tempRoot=tmp_path / "tmp")
    files, described = logic._writeCases([TrainingCaseNodes(volume, segmentation, liverId)], tmp_path)
    assert files[0].emptyLabelValue == 2
    label = read_image(files[0].label)
    assert set(np.unique(label.array)) == {0, 1, 2}
    sparse = sparse_label_from_mask(read_image(files[0].image), label, label_value=1,
                                    background_mask=label.array == 2)
    assert sparse.annotated.tolist() == [0, 4, 6]
    assert not sparse.mask[0].any()


def test_without_not_liver_segment_no_empty_value(mrml, tmp_path):
    from LiverUNetSlicerLib import LiverUNetLogic, ModelLibrary, TrainingCaseNodes

    image, liver = blobImage()
    volume = addVolume(image)
    segmentation = addSegmentation(volume)
    liverId = paintSegment(segmentation, volume, liver, "liver", "Liver")
    logic = LiverUNetLogic(modelLibrary=ModelLibrary(tmp_path / "models"), tempRoot=tmp_path / "tmp")
    files, _ = logic._writeCases([TrainingCaseNodes(volume, segmentation, liverId)], tmp_path)
    assert files[0].emptyLabelValue is None
