"""The slices to look at: where a result is least sure, and where to paint next; jumping the slice views there.

A result's quality (``LiverUNetLib.quality.QualityEstimate.to_dict``, in the worker's segment result) names
slice indices along a numpy axis of the grid that was segmented; :class:`SliceTargets` keeps them with that
grid's world IJK-to-RAS, and each jump moves every slice view's offset so that its plane passes through the
slice's centre (``vtkMRMLSliceNode.JumpSliceByOffsetting``: the views keep their orientation, field of view and
in-plane position). Suggestions to paint come from ``LiverUNetLib.slice_suggestions`` (its ``SHIPPED_RULE``).
Qt-free, torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

import slicer
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.quality import QualityEstimate
from LiverUNetLib.slice_suggestions import SHIPPED_RULE, SUGGESTION_COUNT, suggest_slices
from LiverUNetLib.volume import Volume


@dataclass
class SliceTargets:
    """Slices (indices along ``sliceAxis``, a numpy axis of a KJI grid of ``shape``) to visit in order."""

    slices: list[int]
    sliceAxis: int
    ijkToRas: np.ndarray
    shape: tuple[int, int, int]
    position: int = -1  # the entry last jumped to

    def __post_init__(self) -> None:
        count = self.shape[self.sliceAxis]
        outside = [s for s in self.slices if not 0 <= s < count]
        if outside:
            raise LiverUNetError(f"Slices {outside} lie outside the {count} slices of the image.")

    @classmethod
    def onVolume(cls, slices: Sequence[int], sliceAxis: int, volume: Volume) -> "SliceTargets":
        return cls([int(s) for s in slices], int(sliceAxis), np.asarray(volume.ijk_to_ras, dtype=float),
                   tuple(int(n) for n in volume.array.shape))  # type: ignore[arg-type]

    @classmethod
    def onNode(cls, slices: Sequence[int], sliceAxis: int, volumeNode: slicer.vtkMRMLScalarVolumeNode) -> "SliceTargets":
        """On a volume node's grid and world geometry (what the module's "Segment liver" segments)."""
        from .nodes import worldIjkToRas

        shape = tuple(int(n) for n in reversed(volumeNode.GetImageData().GetDimensions()))
        return cls([int(s) for s in slices], int(sliceAxis), worldIjkToRas(volumeNode), shape)  # type: ignore[arg-type]

    def rasOf(self, sliceIndex: int) -> np.ndarray:
        """World RAS of the centre of slice ``sliceIndex``."""
        kji = [(n - 1) / 2.0 for n in self.shape]
        kji[self.sliceAxis] = float(sliceIndex)
        ijk1 = np.array([kji[2], kji[1], kji[0], 1.0])
        return (self.ijkToRas @ ijk1)[:3]

    def next(self) -> Optional[int]:
        """The next slice to visit (after the last, the first again); None when there is none."""
        if not self.slices:
            return None
        self.position = (self.position + 1) % len(self.slices)
        return self.slices[self.position]

    def describe(self) -> str:
        return ", ".join(str(s) for s in self.slices)


def jumpSliceViews(ras: Sequence[float], scene: Optional[slicer.vtkMRMLScene] = None) -> int:
    """Move every slice view of ``scene`` so its plane passes through ``ras``; returns how many moved."""
    scene = scene or slicer.mrmlScene
    moved = 0
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
        node.JumpSliceByOffsetting(float(ras[0]), float(ras[1]), float(ras[2]))
        moved += 1
    return moved


def jumpToNext(targets: SliceTargets, scene: Optional[slicer.vtkMRMLScene] = None) -> Optional[int]:
    """Jump the slice views to the next of ``targets``; returns its slice index (None: nothing to visit)."""
    sliceIndex = targets.next()
    if sliceIndex is not None:
        jumpSliceViews(targets.rasOf(sliceIndex), scene)
    return sliceIndex


def qualityOf(result: Optional[Mapping[str, Any]]) -> Optional[QualityEstimate]:
    """The quality estimate in a worker's segment result (None from a worker that sent none)."""
    quality = (result or {}).get("quality")
    return QualityEstimate.from_dict(quality) if quality else None


def leastSureTargets(quality: QualityEstimate, volume: Volume) -> SliceTargets:
    """The result's least-sure slices on the grid it was segmented on."""
    return SliceTargets.onVolume(quality.least_sure_slices, quality.slice_axis, volume)


def qualityText(quality: QualityEstimate) -> str:
    """What the panels show: the one-line summary, and why a review is asked for."""
    text = quality.summary()
    if quality.review:
        text += " (the estimate is below what this model's held-out results reach when they are right)"
    return text[0].upper() + text[1:] + "."


def paintTargets(volume: Volume, painted: Sequence[int], sliceUncertainty: Optional[Sequence[float]] = None,
                 count: int = SUGGESTION_COUNT) -> SliceTargets:
    """The next slices to paint on ``volume`` (never a painted one), by the shipped rule; the fill's per-slice
    uncertainty is used when that rule needs it and a fill gave one."""
    axis = volume.slice_axis()
    slices = suggest_slices(list(painted), int(volume.array.shape[axis]), sliceUncertainty, count, SHIPPED_RULE)
    return SliceTargets.onVolume(slices, axis, volume)


def paintText(targets: SliceTargets, afterFill: bool) -> str:
    """The suggestion in words. After a fill the list is where the fill is least sure, measured as a whole (paint all
    of it, then fill again: docs/quality.md); before one, the middles of the largest gaps."""
    if not targets.slices:
        return "No slice to suggest: paint the liver on at least two slices with a gap between them."
    plural = "s" if len(targets.slices) > 1 else ""
    if afterFill:
        them = "them, paint them all" if plural else "it, paint it"
        return f"Least sure after the fill: slice{plural} {targets.describe()}. Check {them} and fill again."
    return f"Paint next: slice{plural} {targets.describe()}."
