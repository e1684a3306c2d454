"""The Segment Editor effect's work, without Qt: read the editor's images, write the result.

The effect (``SegmentEditorLiverUNetLib/SegmentEditorEffect.py``) passes its ``scriptedEffect``;
only the calls in :class:`EffectAccess` are used. The source volume is taken as the editor
resamples it onto the segmentation's reference grid, so the result lands on exactly that grid,
and it is written through ``saveStateForUndo()`` + ``modifySelectedSegmentByLabelmap()`` so
masking, overlap rules and undo apply as for any other effect.

A :class:`EffectSnapshot` records what a job was started on; before writing, the editor is
checked again, so a result is never put into a segment or grid the user has since switched away from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np
import vtk
from vtk.util.numpy_support import vtk_to_numpy

import slicer
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.labels import SparseLabel
from LiverUNetLib.volume import Volume

from .nodes import matrixToArray, nodeName, parentToWorldArray, requireVolumeNode, sameMatrix
from .painted import paintedSlicesOfMask, sparseLabelFromSegment

Extent = tuple[int, int, int, int, int, int]


class EffectAccess(Protocol):
    """The part of Slicer's ``qSlicerSegmentEditorAbstractEffect`` that the effect uses."""

    def parameterSetNode(self) -> slicer.vtkMRMLSegmentEditorNode: ...
    def sourceVolumeImageData(self) -> slicer.vtkOrientedImageData: ...
    def selectedSegmentLabelmap(self) -> slicer.vtkOrientedImageData: ...
    def defaultModifierLabelmap(self) -> slicer.vtkOrientedImageData: ...
    def saveStateForUndo(self) -> None: ...
    def modifySelectedSegmentByLabelmap(self, labelmap: slicer.vtkOrientedImageData, mode: Any) -> None: ...


@dataclass
class EffectSnapshot:
    """What the job was started on: the nodes, the segment, the grid and the source image on it."""

    segmentationNode: slicer.vtkMRMLSegmentationNode
    segmentId: str
    sourceVolumeNode: slicer.vtkMRMLScalarVolumeNode
    extent: Extent
    imageToSegmentation: np.ndarray
    volume: Volume
    painted: Optional[SparseLabel] = None


def imageExtent(image: slicer.vtkOrientedImageData) -> Extent:
    return tuple(int(v) for v in image.GetExtent())  # type: ignore[return-value]


def imageToWorld(image: slicer.vtkOrientedImageData) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return matrixToArray(matrix)


def imageArray(image: slicer.vtkOrientedImageData) -> np.ndarray:
    """A KJI numpy view of a single-component oriented image (index [0,0,0] = the extent's start)."""
    dims = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    if scalars is None or min(dims) <= 0:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    return vtk_to_numpy(scalars).reshape(dims[2], dims[1], dims[0])


def arrayOnExtent(image: slicer.vtkOrientedImageData, extent: Extent) -> np.ndarray:
    """A copy of ``image`` laid onto ``extent`` (zeros where it does not reach); same grid assumed."""
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    out = np.zeros(shape, dtype=np.uint8)
    source = imageArray(image)
    if source.size == 0:
        return out
    have = imageExtent(image)
    lo = [max(have[2 * a], extent[2 * a]) for a in range(3)]
    hi = [min(have[2 * a + 1], extent[2 * a + 1]) for a in range(3)]
    if any(lo[a] > hi[a] for a in range(3)):
        return out
    src = tuple(slice(lo[a] - have[2 * a], hi[a] - have[2 * a] + 1) for a in (2, 1, 0))
    dst = tuple(slice(lo[a] - extent[2 * a], hi[a] - extent[2 * a] + 1) for a in (2, 1, 0))
    out[dst] = source[src] > 0
    return out


def takeSnapshot(effect: EffectAccess, needPainted: bool) -> EffectSnapshot:
    """Check the editor's state and copy what a job needs; clear errors for every missing piece."""
    editorNode = effect.parameterSetNode()
    segmentationNode = editorNode.GetSegmentationNode() if editorNode is not None else None
    if segmentationNode is None:
        raise LiverUNetError("Select a segmentation in the Segment Editor first.")
    segmentId = editorNode.GetSelectedSegmentID() or ""
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    if segment is None:
        raise LiverUNetError("Select the segment to fill (for example 'Liver') in the Segment Editor first.")
    sourceNode = editorNode.GetSourceVolumeNode()
    requireVolumeNode(sourceNode, "source volume")
    parentToWorldArray(sourceNode, "source volume")  # refuses a non-linear transform
    segmentationToWorld = parentToWorldArray(segmentationNode, "segmentation")
    source = effect.sourceVolumeImageData()
    if source is None or source.GetPointData().GetScalars() is None:
        raise LiverUNetError("The Segment Editor could not provide the source volume on the segmentation's grid.")
    extent = imageExtent(source)
    matrix = imageToWorld(source)
    volume = Volume(np.array(imageArray(source), copy=True), segmentationToWorld @ matrix,
                    {"name": nodeName(sourceNode)})
    volume.validate_scalar_3d(f"source volume '{nodeName(sourceNode)}'")
    painted = None
    if needPainted:
        mask = arrayOnExtent(effect.selectedSegmentLabelmap(), extent).astype(bool)
        painted = sparseLabelFromSegment(volume, mask, f"The segment '{segment.GetName()}'")
    return EffectSnapshot(segmentationNode, segmentId, sourceNode, extent, matrix, volume, painted)


def requireUnchanged(effect: EffectAccess, snapshot: EffectSnapshot) -> None:
    """Refuse to write when the segmentation, segment, source volume or grid changed meanwhile."""
    editorNode = effect.parameterSetNode()
    same = (editorNode is not None
            and editorNode.GetSegmentationNode() is snapshot.segmentationNode
            and (editorNode.GetSelectedSegmentID() or "") == snapshot.segmentId
            and editorNode.GetSourceVolumeNode() is snapshot.sourceVolumeNode
            and snapshot.segmentationNode.GetSegmentation().GetSegment(snapshot.segmentId) is not None)
    if not same:
        raise LiverUNetError("The segmentation, segment or source volume was changed while the liver was "
                             "computed, so the result was not written. Run the effect again.")


def fillUnpainted(painted: SparseLabel, prediction: np.ndarray) -> np.ndarray:
    """The painted slices as painted; the model's prediction on every other slice."""
    result = np.asarray(prediction) > 0
    index: list[Any] = [slice(None)] * 3
    index[painted.slice_axis] = painted.annotated
    result[tuple(index)] = painted.mask[tuple(index)]
    return result


def applyMask(effect: EffectAccess, snapshot: EffectSnapshot, mask: np.ndarray, modeSet: Any) -> None:
    """Write ``mask`` (on the snapshot's grid) into the selected segment, with undo and masking."""
    requireUnchanged(effect, snapshot)
    modifier = effect.defaultModifierLabelmap()
    if modifier is None:
        raise LiverUNetError("The Segment Editor could not provide a labelmap to write into.")
    if imageExtent(modifier) != snapshot.extent or not sameMatrix(imageToWorld(modifier), snapshot.imageToSegmentation):
        raise LiverUNetError("The segmentation's geometry changed while the liver was computed, so the "
                             "result was not written. Run the effect again.")
    if tuple(mask.shape) != snapshot.volume.array.shape:
        raise LiverUNetError(f"The result has shape {tuple(mask.shape)} instead of "
                             f"{snapshot.volume.array.shape}; nothing was written.")
    view = imageArray(modifier)
    view[...] = (np.asarray(mask) > 0).astype(view.dtype)
    modifier.GetPointData().GetScalars().Modified()
    modifier.Modified()
    effect.saveStateForUndo()
    effect.modifySelectedSegmentByLabelmap(modifier, modeSet)


def paintedSummary(snapshot: EffectSnapshot) -> str:
    if snapshot.painted is None:
        return ""
    info = paintedSlicesOfMask(snapshot.volume, snapshot.painted.mask)
    return info.describe()
