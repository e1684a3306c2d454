"""The "Liver" segment on real MRML: id, name, colour, terminology, geometry, replace and restore."""

from __future__ import annotations

import numpy as np
import pytest
import vtk

from slicer_harness import (addSegmentation, addVolume, blobImage, mrml, obliqueIjkToRas,  # noqa: F401
                            paintSegment, requires_slicer_core, segmentArray)

pytestmark = requires_slicer_core


def _terminologyCodes(text: str) -> tuple[str, str, str]:
    import slicer

    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic().DeserializeTerminologyEntry(text, entry)
    return (entry.GetCategoryObject().GetCodeValue(), entry.GetTypeObject().GetCodeValue(),
            entry.GetTypeObject().GetCodeMeaning())


def test_new_liver_segment_has_id_name_colour_terminology_and_volume_geometry(mrml):
    import slicer
    from LiverUNetSlicerLib.liver_segment import LIVER_TERMINOLOGY, newSegmentationNode, writeLiverMask
    from LiverUNetSlicerLib.segmentation_geometry import imageToWorldArray, referenceGeometry

    image, mask = blobImage((8, 20, 24))
    volume = addVolume(image, obliqueIjkToRas(), "patient")
    seg = newSegmentationNode(volume)
    assert seg.GetName() == "patient liver"
    backup = writeLiverMask(seg, volume, mask)
    assert backup.segment is None and backup.segmentId == "Liver"
    segment = seg.GetSegmentation().GetSegment("Liver")
    assert segment.GetName() == "Liver"
    np.testing.assert_allclose(segment.GetColor(), (221 / 255, 130 / 255, 101 / 255))
    assert segment.GetTerminology() == LIVER_TERMINOLOGY
    tag = vtk.reference("")
    assert segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), tag) and str(tag) == LIVER_TERMINOLOGY
    assert _terminologyCodes(segment.GetTerminology()) == ("123037004", "10200004", "Liver")
    np.testing.assert_array_equal(segmentArray(seg, "Liver", volume), mask)
    geometry = referenceGeometry(seg)
    np.testing.assert_allclose(imageToWorldArray(geometry), obliqueIjkToRas(), atol=1e-6)
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is volume


def test_colour_and_terminology_match_the_library_file_writer():
    """The Slicer layer keeps its own copy (LiverUNetLib.segmentation_file needs slicerio, which Slicer
    does not bundle); both must describe the liver identically."""
    segmentation_file = pytest.importorskip("LiverUNetLib.segmentation_file")
    from LiverUNetSlicerLib.liver_segment import LIVER_COLOR, LIVER_TERMINOLOGY

    assert segmentation_file.LIVER_TERMINOLOGY == LIVER_TERMINOLOGY
    np.testing.assert_allclose(segmentation_file.LIVER_COLOR, LIVER_COLOR)


def test_existing_liver_segment_is_replaced_and_can_be_restored_exactly(mrml):
    from LiverUNetSlicerLib.liver_segment import restoreSegment, writeLiverMask

    image, mask = blobImage((8, 20, 24))
    volume = addVolume(image, obliqueIjkToRas(), "patient")
    seg = addSegmentation(volume)
    old = np.zeros_like(mask)
    old[2:5, 5:9, 6:10] = True
    other = np.zeros_like(mask)
    other[6:8, 1:3, 1:3] = True
    paintSegment(seg, volume, other, "Kidney")
    liverId = paintSegment(seg, volume, old, "myliver", "liver")  # found by name, case-insensitive
    paintSegment(seg, volume, other, "Spleen")
    seg.GetSegmentation().GetSegment(liverId).SetColor(0.1, 0.2, 0.3)
    seg.GetSegmentation().CollapseBinaryLabelmaps(False)  # segments now share labelmap layers
    assert seg.GetSegmentation().GetNumberOfLayers() < 3
    order = list(seg.GetSegmentation().GetSegmentIDs())

    backup = writeLiverMask(seg, volume, mask)
    assert backup.segmentId == liverId and backup.segment is not None
    assert list(seg.GetSegmentation().GetSegmentIDs()) == order  # replaced in place, no new segment
    np.testing.assert_array_equal(segmentArray(seg, liverId, volume), mask)
    assert seg.GetSegmentation().GetSegment(liverId).GetName() == "Liver"

    restoreSegment(backup)
    assert list(seg.GetSegmentation().GetSegmentIDs()) == order
    restored = seg.GetSegmentation().GetSegment(liverId)
    assert restored.GetName() == "liver"
    np.testing.assert_allclose(restored.GetColor(), (0.1, 0.2, 0.3))
    np.testing.assert_array_equal(segmentArray(seg, liverId, volume), old)
    np.testing.assert_array_equal(segmentArray(seg, "Kidney", volume), other)
    np.testing.assert_array_equal(segmentArray(seg, "Spleen", volume), other)


def test_restore_after_a_new_segment_removes_it(mrml):
    from LiverUNetSlicerLib.liver_segment import restoreSegment, writeLiverMask

    image, mask = blobImage((6, 10, 12))
    volume = addVolume(image, name="v")
    seg = addSegmentation(volume)
    backup = writeLiverMask(seg, volume, mask)
    restoreSegment(backup)
    assert seg.GetSegmentation().GetNumberOfSegments() == 0


def test_wrong_mask_shape_is_refused_before_anything_changes(mrml):
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.liver_segment import writeLiverMask

    image, mask = blobImage((6, 10, 12))
    volume = addVolume(image, name="v")
    seg = addSegmentation(volume)
    with pytest.raises(LiverUNetError, match="shape"):
        writeLiverMask(seg, volume, mask[:, :, :-1])
    assert seg.GetSegmentation().GetNumberOfSegments() == 0


def test_output_segmentation_on_another_grid_is_refused_and_left_alone(mrml):
    from LiverUNetLib.errors import LiverUNetError
    from LiverUNetSlicerLib.liver_segment import writeLiverMask

    image, mask = blobImage((6, 10, 12))
    volume = addVolume(image, name="v")
    coarse = addVolume(np.zeros((3, 5, 6), np.int16), np.diag([2.0, 2.0, 2.0, 1.0]), "coarse")
    seg = addSegmentation(coarse)
    keep = np.zeros((3, 5, 6), bool)
    keep[1, 2:4, 2:4] = True
    paintSegment(seg, coarse, keep, "Tumour")
    with pytest.raises(LiverUNetError, match="different geometry.*Create new segmentation"):
        writeLiverMask(seg, volume, mask)
    assert list(seg.GetSegmentation().GetSegmentIDs()) == ["Tumour"]
    np.testing.assert_array_equal(segmentArray(seg, "Tumour", coarse), keep)


def test_empty_output_segmentation_takes_the_volume_geometry(mrml):
    from LiverUNetSlicerLib.liver_segment import writeLiverMask

    image, mask = blobImage((6, 10, 12))
    volume = addVolume(image, obliqueIjkToRas(), "v")
    coarse = addVolume(np.zeros((3, 5, 6), np.int16), np.diag([2.0, 2.0, 2.0, 1.0]), "coarse")
    seg = addSegmentation(coarse)
    writeLiverMask(seg, volume, mask)
    np.testing.assert_array_equal(segmentArray(seg, "Liver", volume), mask)


def test_result_is_placed_beside_the_input_in_the_subject_hierarchy(mrml):
    import slicer
    from LiverUNetSlicerLib.liver_segment import newSegmentationNode
    from LiverUNetSlicerLib.subject_hierarchy import placeBeside

    volume = addVolume(np.zeros((3, 4, 5), np.int16), name="v")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1"), "Study 1")
    sh.CreateItem(study, volume)  # what Slicer's subject hierarchy plugins do for every new node
    seg = newSegmentationNode(volume)
    assert placeBeside(seg, volume)
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == study
    # an item that exists elsewhere is moved
    other = sh.CreateFolderItem(sh.GetSceneItemID(), "elsewhere")
    sh.SetItemParent(sh.GetItemByDataNode(seg), other)
    assert placeBeside(seg, volume)
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == study
