"""The "Liver" segment: standard name, colour and SNOMED terminology; replace with undo.

The result always lands in a segment named "Liver" on the input volume's grid. If one exists it is
replaced, but a deep copy of the old segment is kept in a :class:`SegmentBackup`, so the previous
content can be put back exactly (same id, same place in the list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

import slicer
from LiverUNetLib.errors import LiverUNetError

from .nodes import nodeName
from .segmentation_geometry import requireWritableOnVolumeGrid

LIVER_SEGMENT_ID = "Liver"
LIVER_SEGMENT_NAME = "Liver"
LIVER_COLOR = (221 / 255.0, 130 / 255.0, 101 / 255.0)
# Slicer's serialized terminology entry (context~category~type~modifier~region context~region~modifier):
# category SCT 123037004 "Anatomical Structure", type SCT 10200004 "Liver", as in Slicer's General Anatomy list.
LIVER_TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list"
    "~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~^^"
    "~Anatomic codes - DICOM master list~^^~^^"
)


@dataclass
class SegmentBackup:
    """What a segmentation held under ``segmentId`` before the liver was written.

    ``segment`` is a deep copy of the old segment, or None when the segment did not exist (restoring
    then removes the new one).
    """

    segmentationNode: slicer.vtkMRMLSegmentationNode
    segmentId: str
    segment: Optional[slicer.vtkSegment]
    nextSegmentId: str = ""


def setLiverAppearance(segment: slicer.vtkSegment) -> None:
    """Name, colour and terminology of a liver segment (Slicer 5.10+ API, tag fallback for older)."""
    segment.SetName(LIVER_SEGMENT_NAME)
    segment.SetColor(*LIVER_COLOR)
    if hasattr(segment, "SetTerminology"):
        segment.SetTerminology(LIVER_TERMINOLOGY)
    else:  # Slicer before 5.10
        segment.SetTag(segment.GetTerminologyEntryTagName(), LIVER_TERMINOLOGY)


def findLiverSegmentId(segmentationNode: slicer.vtkMRMLSegmentationNode) -> str:
    """Id of the segment named "Liver" (case-insensitive), or "" when there is none."""
    return segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(LIVER_SEGMENT_NAME)


def newSegmentationNode(volumeNode: slicer.vtkMRMLScalarVolumeNode) -> slicer.vtkMRMLSegmentationNode:
    """An empty segmentation named after the volume, on its grid and under its transform."""
    scene = volumeNode.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{nodeName(volumeNode)} liver")
    node.CreateDefaultDisplayNodes()
    prepareSegmentationNode(node, volumeNode)
    return node


def prepareSegmentationNode(segmentationNode: slicer.vtkMRMLSegmentationNode,
                            volumeNode: slicer.vtkMRMLScalarVolumeNode) -> None:
    """Check an existing output and set its geometry, transform and source volume from the input."""
    requireWritableOnVolumeGrid(segmentationNode, volumeNode)
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    # Also sets the reference role that DICOM SEG export and slicer.util's segment helpers use.
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)


def writeLiverMask(segmentationNode: slicer.vtkMRMLSegmentationNode,
                   volumeNode: slicer.vtkMRMLScalarVolumeNode,
                   mask: np.ndarray) -> SegmentBackup:
    """Write ``mask`` (KJI, on the volume's grid) as the "Liver" segment; return the backup of before.

    The shape is checked first (Slicer would silently accept a wrong one), so on any error the
    segmentation is unchanged.
    """
    expected = tuple(slicer.util.arrayFromVolume(volumeNode).shape)
    if tuple(mask.shape) != expected:
        raise LiverUNetError(
            f"The liver mask has shape {tuple(mask.shape)} but the volume '{nodeName(volumeNode)}' has "
            f"shape {expected}; the result was not written."
        )
    prepareSegmentationNode(segmentationNode, volumeNode)
    segmentation = segmentationNode.GetSegmentation()
    segmentId = findLiverSegmentId(segmentationNode)
    backup = _backup(segmentationNode, segmentId)
    if not segmentId:
        segmentId = segmentation.AddEmptySegment(LIVER_SEGMENT_ID, LIVER_SEGMENT_NAME, list(LIVER_COLOR))
        backup.segmentId = segmentId
    try:
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            (np.asarray(mask) > 0).astype(np.uint8), segmentationNode, segmentId, volumeNode)
    except Exception:
        restoreSegment(backup)
        raise
    setLiverAppearance(segmentation.GetSegment(segmentId))
    return backup


def restoreSegment(backup: SegmentBackup) -> None:
    """Put back what :func:`writeLiverMask` replaced (or remove the segment it added)."""
    segmentation = backup.segmentationNode.GetSegmentation()
    if segmentation.GetSegment(backup.segmentId) is not None:
        segmentation.RemoveSegment(backup.segmentId)
    if backup.segment is None:
        return
    before = backup.nextSegmentId if segmentation.GetSegment(backup.nextSegmentId or "") else ""
    copy = slicer.vtkSegment()
    copy.DeepCopy(backup.segment)
    if not segmentation.AddSegment(copy, backup.segmentId, before):
        raise LiverUNetError(f"Could not restore segment '{backup.segmentId}' in '{nodeName(backup.segmentationNode)}'.")


def _backup(segmentationNode: slicer.vtkMRMLSegmentationNode, segmentId: str) -> SegmentBackup:
    if not segmentId:
        return SegmentBackup(segmentationNode, "", None)
    segmentation = segmentationNode.GetSegmentation()
    copy = slicer.vtkSegment()
    copy.DeepCopy(segmentation.GetSegment(segmentId))
    ids = list(segmentation.GetSegmentIDs())
    index = ids.index(segmentId)
    nextId = ids[index + 1] if index + 1 < len(ids) else ""
    return SegmentBackup(segmentationNode, segmentId, copy, nextId)
