"""The training-case table's rows, with each case's painted slices counted once per segment state.

Counting painted slices exports the segment onto the volume's grid (a copy of the volume's size and a
temporary labelmap node), and the panel refreshes its table on every parameter-node change, which
includes each character typed into the model name. So each count is kept with the modification times
of the nodes, segment and images it was computed from, and recomputed only when one of them changed.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import slicer
from LiverUNetLib.errors import LiverUNetError

from .painted import PaintedSlices, paintedSlices

Row = tuple[str, str, str, str]  # volume, segmentation, segment, painted slices
REMOVED = "(removed)"


def _mtime(obj: Any) -> int:
    return int(obj.GetMTime()) if obj is not None else -1


def caseState(volumeNode, segmentationNode, segmentId: str) -> tuple:
    """What a painted-slice count depends on: node ids and the modification times of the volume's image,
    the segmentation, the segment and its labelmap (VTK's counter grows with every change, never repeats)."""
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    labelmapName = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    labelmap = segment.GetRepresentation(labelmapName) if segment is not None else None
    return (volumeNode.GetID(), _mtime(volumeNode), _mtime(volumeNode.GetImageData()),
            segmentationNode.GetID(), _mtime(segmentationNode), segmentId, _mtime(segment), _mtime(labelmap))


class PaintedSlicesCache:
    """Painted-slice descriptions per case, recomputed only when the case's state changed."""

    def __init__(self, count: Callable[..., PaintedSlices] = paintedSlices) -> None:
        self._count = count
        self._entries: dict[tuple[str, str, str], tuple[tuple, str]] = {}

    def describe(self, volumeNode, segmentationNode, segmentId: str) -> str:
        state = caseState(volumeNode, segmentationNode, segmentId)
        case = (volumeNode.GetID(), segmentationNode.GetID(), segmentId)
        cached = self._entries.get(case)
        if cached is not None and cached[0] == state:
            return cached[1]
        try:
            text = self._count(volumeNode, segmentationNode, segmentId).describe()
        except LiverUNetError as error:
            text = f"problem: {error}"
        self._entries[case] = (state, text)
        return text

    def forget(self) -> None:
        self._entries.clear()


def caseRows(cases: Sequence[tuple[Any, Any, str]], cache: PaintedSlicesCache) -> list[Row]:
    """One row per ``(volumeNode, segmentationNode, segmentId)``; removed nodes or segments are named so."""
    rows = []
    for volume, segmentation, segmentId in cases:
        segment: Optional[slicer.vtkSegment] = (segmentation.GetSegmentation().GetSegment(segmentId)
                                                if segmentation is not None else None)
        if volume is None or segmentation is None or segment is None:
            painted = "problem: a node or the segment was removed"
        else:
            painted = cache.describe(volume, segmentation, segmentId)
        rows.append((volume.GetName() if volume is not None else REMOVED,
                     segmentation.GetName() if segmentation is not None else REMOVED,
                     segment.GetName() if segment is not None else REMOVED, painted))
    return rows
