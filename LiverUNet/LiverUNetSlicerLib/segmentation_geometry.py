"""Is a segmentation (or one of its segments) on the same voxel grid as a volume?

Painted slices only mean something on the grid they were painted on, and a result written into a
segmentation laid out on another grid would be resampled. Both cases are refused with a message
saying what to do, instead of silently resampling.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import vtk

import slicer
from LiverUNetLib.errors import LiverUNetError

from .nodes import localIjkToRas, matrixToArray, nodeName, sameMatrix


def referenceGeometry(segmentationNode: slicer.vtkMRMLSegmentationNode) -> Optional[slicer.vtkOrientedImageData]:
    """The segmentation's reference geometry as an empty oriented image, or None when unset."""
    segmentation = segmentationNode.GetSegmentation()
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    text = segmentation.GetConversionParameter(name)
    if not text:
        return None
    image = slicer.vtkOrientedImageData()
    if not slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, image, False):
        return None
    return image


def imageToWorldArray(image: slicer.vtkOrientedImageData) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return matrixToArray(matrix)


def volumeExtent(volumeNode: slicer.vtkMRMLVolumeNode) -> tuple[int, ...]:
    dims = volumeNode.GetImageData().GetDimensions()
    return (0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)


def geometryMatchesVolume(image: slicer.vtkOrientedImageData, volumeNode: slicer.vtkMRMLVolumeNode,
                          requireSameExtent: bool) -> bool:
    """Same voxel positions (matrix) and, if asked, the same full extent as the volume."""
    if not sameMatrix(imageToWorldArray(image), localIjkToRas(volumeNode)):
        return False
    if not requireSameExtent:
        return True
    return tuple(image.GetExtent()) == volumeExtent(volumeNode)


def sameParentTransform(segmentationNode: slicer.vtkMRMLSegmentationNode,
                        volumeNode: slicer.vtkMRMLVolumeNode) -> bool:
    return segmentationNode.GetTransformNodeID() == volumeNode.GetTransformNodeID()


def requireSegmentOnVolumeGrid(segmentationNode: slicer.vtkMRMLSegmentationNode, segmentId: str,
                               volumeNode: slicer.vtkMRMLVolumeNode) -> None:
    """Refuse a segment painted on another grid (or under another transform) than ``volumeNode``."""
    if not sameParentTransform(segmentationNode, volumeNode):
        raise LiverUNetError(
            f"The segmentation '{nodeName(segmentationNode)}' and the volume '{nodeName(volumeNode)}' are "
            "under different transforms. Put both under the same transform (or harden both) first."
        )
    labelmap = segmentationNode.GetBinaryLabelmapInternalRepresentation(segmentId)
    image = labelmap if labelmap is not None and not _isEmptyExtent(labelmap) else referenceGeometry(segmentationNode)
    if image is None:
        return  # nothing painted and no geometry yet: there is nothing to misplace
    if not geometryMatchesVolume(image, volumeNode, requireSameExtent=False):
        raise LiverUNetError(
            f"The segmentation '{nodeName(segmentationNode)}' was painted on a different voxel grid than "
            f"the volume '{nodeName(volumeNode)}' (other spacing, origin or orientation), so its painted "
            "slices do not match the volume's slices. Choose the volume it was painted on, or paint in a "
            "segmentation whose geometry was set from this volume (Segment Editor: 'Specify geometry')."
        )


def requireWritableOnVolumeGrid(segmentationNode: slicer.vtkMRMLSegmentationNode,
                                volumeNode: slicer.vtkMRMLVolumeNode) -> None:
    """Refuse to write a result into a segmentation laid out on another grid than the input volume.

    An empty segmentation is fine: its geometry is then set from the volume.
    """
    if segmentationNode.GetSegmentation().GetNumberOfSegments() == 0:
        return
    if not sameParentTransform(segmentationNode, volumeNode):
        raise LiverUNetError(
            f"The output segmentation '{nodeName(segmentationNode)}' is under another transform than the "
            f"volume '{nodeName(volumeNode)}'. Choose 'Create new segmentation' as output instead."
        )
    image = referenceGeometry(segmentationNode)
    if image is not None and not geometryMatchesVolume(image, volumeNode, requireSameExtent=True):
        raise LiverUNetError(
            f"The output segmentation '{nodeName(segmentationNode)}' has a different geometry than the "
            f"volume '{nodeName(volumeNode)}', so the liver would be resampled and other segments could "
            "change. Choose 'Create new segmentation' as output, or a segmentation made on this volume."
        )


def _isEmptyExtent(image: slicer.vtkOrientedImageData) -> bool:
    e = image.GetExtent()
    return e[0] > e[1] or e[2] > e[3] or e[4] > e[5]
