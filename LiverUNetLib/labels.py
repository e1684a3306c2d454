"""Sparse training labels: a mask plus the slices a person actually annotated.

A clinician paints the liver on some slices only. Slices with any voxel of the segment count as
annotated; the others are unknown and carry no loss. Slices known to hold no liver (above and below
it) can be declared, so the model also learns where the liver ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from .errors import LiverUNetError
from .volume import Volume


@dataclass
class SparseLabel:
    """``mask`` (bool, KJI, on the image grid) is trusted only on ``annotated`` slices along ``slice_axis``."""

    mask: np.ndarray
    annotated: np.ndarray
    slice_axis: int

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask, dtype=bool)
        self.annotated = np.unique(np.asarray(self.annotated, dtype=np.int64))
        n = self.mask.shape[self.slice_axis]
        if self.annotated.size and (self.annotated.min() < 0 or self.annotated.max() >= n):
            raise LiverUNetError(
                f"Annotated slice indices must lie in 0..{n - 1}; got {self.annotated.tolist()}."
            )

    @property
    def annotated_count(self) -> int:
        return int(self.annotated.size)

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
