"""Which slices of a volume a person painted in a segment.

A slice counts as painted when any voxel of the segment lies in it; the slices are taken
perpendicular to the volume's axis closest to superior (see ``Volume.slice_axis``), which is K for
an axial scan but not for sagittal or coronal ones. Unpainted slices are unknown, not background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import slicer
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.labels import SparseLabel, liver_slices, sparse_label_from_mask
from LiverUNetLib.volume import Volume

from .nodes import nodeName, volumeFromNode
from .segmentation_geometry import requireSegmentOnVolumeGrid


@dataclass(frozen=True)
class PaintedSlices:
    """Painted slice indices along ``sliceAxis`` (a numpy axis of the KJI array) out of ``sliceCount``."""

    sliceAxis: int
    indices: tuple[int, ...]
    sliceCount: int

    @property
    def count(self) -> int:
        return len(self.indices)

    def describe(self) -> str:
        return f"{self.count} of {self.sliceCount} slices painted"


def requireSegment(segmentationNode: slicer.vtkMRMLSegmentationNode, segmentId: str) -> slicer.vtkSegment:
    if segmentationNode is None:
        raise LiverUNetError("No segmentation is selected. Choose the segmentation holding the painted liver.")
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId or "")
    if segment is None:
        raise LiverUNetError(
            f"The segmentation '{nodeName(segmentationNode)}' has no segment with id '{segmentId}'. "
            "Choose the segment holding the painted liver."
        )
    return segment


def segmentMask(volumeNode: slicer.vtkMRMLScalarVolumeNode, segmentationNode: slicer.vtkMRMLSegmentationNode,
                segmentId: str) -> np.ndarray:
    """The segment as a bool KJI array on the volume's grid (refusing segments painted elsewhere)."""
    requireSegment(segmentationNode, segmentId)
    requireSegmentOnVolumeGrid(segmentationNode, segmentId, volumeNode)
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode) > 0
    expected = tuple(slicer.util.arrayFromVolume(volumeNode).shape)
    if mask.shape != expected:
        raise LiverUNetError(
            f"The segment came out with shape {mask.shape} instead of the volume's {expected}; "
            "set the segmentation's geometry from the volume and try again."
        )
    return mask


def paintedSlicesOfMask(volume: Volume, mask: np.ndarray) -> PaintedSlices:
    axis = volume.slice_axis()
    indices = tuple(int(i) for i in liver_slices(mask, axis))
    return PaintedSlices(axis, indices, int(mask.shape[axis]))


def paintedSlices(volumeNode: slicer.vtkMRMLScalarVolumeNode, segmentationNode: slicer.vtkMRMLSegmentationNode,
                  segmentId: str) -> PaintedSlices:
    """Count the painted slices (an empty segment gives 0, for display)."""
    volume = volumeFromNode(volumeNode)
    return paintedSlicesOfMask(volume, segmentMask(volumeNode, segmentationNode, segmentId))


def sparseLabelFromSegment(volume: Volume, mask: np.ndarray, what: str) -> SparseLabel:
    """A training label from a painted mask; a clear error when nothing is painted."""
    if not mask.any():
        raise LiverUNetError(
            f"{what} has no painted slice. Outline the whole liver on a few slices (for example every "
            "5th to 10th slice) with the Segment Editor, then try again."
        )
    return sparse_label_from_mask(volume, volume.with_array(mask.astype(np.uint8)))
