"""Sparse training labels: a mask plus the slices a person actually annotated.

A clinician paints the liver on some slices only. Slices with any voxel of the segment count as
annotated; the others are unknown and carry no loss. Slices known to hold no liver (above and below
it) can be declared, so the model also learns where the liver ends; and when the painting covers the
liver from top to bottom at a regular interval, the slices farther beyond it than that interval hold no
liver and are taken as such (``liver_free_beyond_painting``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from .errors import LiverUNetError
from .volume import Volume

# Below this craniocaudal extent of the painted slices the painting may cover only part of the liver (an
# adult liver spans about 13-20 cm), so no slice beyond it is assumed liver-free.
MIN_PAINTED_EXTENT_MM = 100.0


@dataclass
class SparseLabel:
    """``mask`` (bool, KJI, on the image grid) is trusted only on ``annotated`` slices along ``slice_axis``."""

    mask: np.ndarray
    annotated: np.ndarray
    slice_axis: int
    # how often training draws each annotated slice, relative to the others (None: all alike)
    sampling_weights: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask, dtype=bool)
        given = np.asarray(self.annotated, dtype=np.int64)
        self.annotated = np.unique(given)
        n = self.mask.shape[self.slice_axis]
        if self.annotated.size and (self.annotated.min() < 0 or self.annotated.max() >= n):
            raise LiverUNetError(
                f"Annotated slice indices must lie in 0..{n - 1}; got {self.annotated.tolist()}."
            )
        if self.sampling_weights is not None:
            self.sampling_weights = np.asarray(self.sampling_weights, dtype=np.float64)
            if not np.array_equal(given, self.annotated) or self.sampling_weights.shape != self.annotated.shape:
                raise LiverUNetError("Sampling weights need sorted, distinct annotated slices, one weight each.")
            if not (np.all(np.isfinite(self.sampling_weights)) and np.all(self.sampling_weights > 0)):
                raise LiverUNetError("Sampling weights must be positive.")

    @property
    def annotated_count(self) -> int:
        return int(self.annotated.size)

    def annotated_weights(self) -> np.ndarray:
        """Sampling weight of each annotated slice (1.0 each unless ``sampling_weights`` says otherwise)."""
        return np.ones(self.annotated.size) if self.sampling_weights is None else self.sampling_weights.copy()

    def slice_weights(self) -> np.ndarray:
        """1.0 for annotated slices, 0.0 for unknown ones, along ``slice_axis``."""
        w = np.zeros(self.mask.shape[self.slice_axis], dtype=np.float32)
        w[self.annotated] = 1.0
        return w

    def keep_every_k(self, k: int, offset: Optional[int] = None) -> "SparseLabel":
        """Keep only every ``k``-th slice that holds liver, as a person painting every few slices would.

        The first kept slice is ``offset`` slices into the liver (default: the middle of the first
        stride), so k=5 on a 25-slice liver keeps 5 well-spread slices. Declared empty slices are
        dropped too, since a person painting sparsely would not declare them either.
        """
        if k < 1:
            raise LiverUNetError(f"--every-k must be at least 1, got {k}.")
        liver = liver_slices(self.mask, self.slice_axis)
        if liver.size == 0:
            raise LiverUNetError("The label holds no liver voxel, so no slice can be kept.")
        if k == 1:
            keep = self.annotated
        else:
            start = (k // 2) if offset is None else offset
            keep = liver[start::k] if start < liver.size else liver[len(liver) // 2 : len(liver) // 2 + 1]
        mask = np.zeros_like(self.mask)
        index = [slice(None)] * 3
        index[self.slice_axis] = keep
        mask[tuple(index)] = self.mask[tuple(index)]
        return SparseLabel(mask, keep, self.slice_axis)


def liver_slices(mask: np.ndarray, slice_axis: int) -> np.ndarray:
    """Sorted indices of the slices along ``slice_axis`` holding at least one foreground voxel."""
    other = tuple(a for a in range(3) if a != slice_axis)
    return np.flatnonzero(np.asarray(mask).any(axis=other))


def sparse_label_from_mask(
    image: Volume,
    label: Volume,
    label_value: Optional[int] = None,
    empty_slices: Iterable[int] = (),
    background_mask: Optional[np.ndarray] = None,
    dense: bool = False,
) -> SparseLabel:
    """Make a training label from a label volume on the image's grid.

    ``label_value`` picks one value of a multi-label map (default: every non-zero voxel).
    Annotated slices are those holding any foreground voxel, plus ``empty_slices`` and any slice
    holding a voxel of ``background_mask`` (a "not liver" segment painted by the user).
    With ``dense=True`` every slice counts as annotated (fully labelled reference data).
    """
    image.validate_scalar_3d("image")
    if label.array.ndim != 3:
        raise LiverUNetError(f"The label must be a 3D volume, got shape {label.array.shape}.")
    if not image.same_grid(label, tolerance_mm=1e-2):
        raise LiverUNetError(
            f"The label's grid (shape {label.array.shape}) differs from the image's grid "
            f"(shape {image.array.shape}) or is placed elsewhere in space. Resample the label onto "
            "the image (in Slicer: export the segment with the image as reference geometry)."
        )
    values = label.array
    mask = values == label_value if label_value is not None else values != 0
    axis = image.slice_axis()
    n = mask.shape[axis]
    if dense:
        annotated = np.arange(n)
    else:
        annotated = liver_slices(mask, axis)
        extra = [int(s) for s in empty_slices]
        bad = [s for s in extra if not 0 <= s < n]
        if bad:
            raise LiverUNetError(f"Empty-slice indices {bad} are outside 0..{n - 1}.")
        if background_mask is not None:
            if background_mask.shape != mask.shape:
                raise LiverUNetError("The 'not liver' mask is not on the image's grid.")
            extra.extend(liver_slices(background_mask, axis).tolist())
        annotated = np.union1d(annotated, np.asarray(extra, dtype=np.int64))
    if not mask.any():
        what = f"value {label_value}" if label_value is not None else "any non-zero value"
        raise LiverUNetError(
            f"The label holds no voxel with {what}: there is no liver to learn from. Paint the liver "
            "on a few slices (or pass the right --label-value)."
        )
    if annotated.size == 0:
        raise LiverUNetError("The label has no annotated slice. Paint the liver on a few slices first.")
    return SparseLabel(mask, annotated, axis)


def liver_free_beyond_painting(
    label: SparseLabel, slice_spacing_mm: float, min_extent_mm: float = MIN_PAINTED_EXTENT_MM
) -> SparseLabel:
    """Also annotate, as holding no liver, the slices farther beyond the painted ones than the painting interval.

    Why: a person painting every k-th liver slice leaves the network without a single slice above or below
    the liver, so it learns nothing about where the liver ends and marks liver there on new scans. If the
    painted liver slices are at most ``gap`` slices apart and reach from the liver's top to its bottom, the
    liver ends less than ``gap`` slices beyond the outermost ones; every slice farther out holds none.
    Each painted slice stands for the ``gap`` slices around it and each liver-free slice for itself, so the
    liver-free slices are drawn ``1 / gap`` as often as painted ones (``sampling_weights``): the same share
    of empty slices as a fully labelled scan gives. Drawn as often, they outnumbered the painted slices
    two to one at every 5th slice and the network learned to miss an unusually dark liver (subject 15 of
    CHAOS: Dice 0.84 -> 0.47; docs/accuracy_notes.md).
    The rule applies only when at least two liver slices are painted, spanning ``min_extent_mm`` or more
    (a shorter painting may cover part of the liver only); otherwise the label comes back unchanged.
    """
    painted = np.intersect1d(liver_slices(label.mask, label.slice_axis), label.annotated)
    if painted.size < 2 or (painted[-1] - painted[0]) * slice_spacing_mm < min_extent_mm:
        return label
    gap = int(np.diff(painted).max())
    count = label.mask.shape[label.slice_axis]
    beyond = np.concatenate([np.arange(0, max(painted[0] - gap + 1, 0)), np.arange(painted[-1] + gap, count)])
    if beyond.size == 0:
        return label
    mask = label.mask.copy()
    index = [slice(None)] * 3
    index[label.slice_axis] = beyond
    mask[tuple(index)] = False
    annotated = np.union1d(label.annotated, beyond)
    weights = np.full(annotated.size, 1.0 / gap)
    weights[np.isin(annotated, label.annotated)] = label.annotated_weights()
    return SparseLabel(mask, annotated, label.slice_axis, weights)
