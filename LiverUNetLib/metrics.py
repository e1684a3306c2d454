"""Segmentation accuracy in millimetres on the real (anisotropic, possibly oblique) voxel grid.

Definitions follow the CHAOS challenge organisers' evaluation code (Kavur et al. 2021), so the
golden example in ``../shared/data/chaos-ct-sample`` reproduces their published figures:

* **surface** of a mask: its voxels with at least one face-neighbour (6-connectivity) outside the
  mask; the space beyond the image border counts as inside, so a mask cut by the field of view
  has no surface on the cut (``BinaryErode`` with a cross kernel and ``boundaryToForeground``).
  Only a mask filling the whole image, which would have no surface at all, gets its voxels on
  the image border as surface.
* **surface distances**: from every surface voxel centre of one mask to the nearest surface voxel
  centre of the other, both ways (exact Euclidean distance transform, SimpleITK
  ``SignedMaurerDistanceMap`` with the voxel spacing).
* **ASSD**: mean of all distances of both directions pooled; **MSSD**: their maximum (the
  symmetric Hausdorff distance); **HD95**: the larger of the two directed 95th percentiles (as
  MedPy and MONAI define it).
* **RAVD**: ``|V_pred - V_ref| / V_ref * 100`` (absolute, as the organisers compute it).
* **Dice**, **IoU** on voxels; volumes in mL from the voxel size.

Empty masks: both empty gives Dice = IoU = 1, every distance 0 and RAVD 0; exactly one empty gives
Dice = IoU = 0 and every distance ``inf`` (RAVD 100 % for an empty prediction, ``inf`` for an
empty reference). Masks on different grids are refused: resample first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import SimpleITK as sitk

from .errors import LiverUNetError
from .volume import Volume

METRIC_KEYS = ("dice", "iou", "hd95_mm", "assd_mm", "ravd_percent", "mssd_mm", "volume_ml")


@dataclass
class SegmentationMetrics:
    dice: float
    iou: float
    hd95_mm: float
    assd_mm: float
    ravd_percent: float
    mssd_mm: float
    volume_ml: float
    reference_volume_ml: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def evaluate(
    reference: Volume, prediction: Volume, label_value: Optional[int] = None
) -> SegmentationMetrics:
    """Compare ``prediction`` with ``reference`` (same grid). ``label_value`` selects one label of
    multi-label maps in both; by default every non-zero voxel is foreground."""
    for what, vol in (("reference", reference), ("prediction", prediction)):
        if np.asarray(vol.array).ndim != 3:
            raise LiverUNetError(f"The {what} must be a 3D mask; got shape {np.shape(vol.array)}.")
    if not reference.same_grid(prediction, tolerance_mm=1e-3):
        raise LiverUNetError(
            f"The prediction's grid (shape {prediction.array.shape}) differs from the reference's "
            f"(shape {reference.array.shape}) or is placed elsewhere in space. Metrics need both "
            "masks on one grid: resample the prediction onto the reference first."
        )
    ref = _foreground(reference.array, label_value)
    pred = _foreground(prediction.array, label_value)
    voxel_ml = reference.voxel_volume_ml
    n_ref, n_pred = int(ref.sum()), int(pred.sum())
    ref_ml, pred_ml = n_ref * voxel_ml, n_pred * voxel_ml

    if n_ref == 0 and n_pred == 0:
        return SegmentationMetrics(1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    if n_ref == 0 or n_pred == 0:
        ravd = math.inf if n_ref == 0 else 100.0
        inf = math.inf
        return SegmentationMetrics(0.0, 0.0, inf, inf, ravd, inf, pred_ml, ref_ml)

    overlap = int(np.count_nonzero(ref & pred))
    dice = 2.0 * overlap / (n_ref + n_pred)
    iou = overlap / (n_ref + n_pred - overlap)
    ravd = abs(n_pred - n_ref) / n_ref * 100.0

    d_pred_to_ref, d_ref_to_pred = surface_distances(ref, pred, reference.ijk_to_ras)
    pooled = np.concatenate([d_pred_to_ref, d_ref_to_pred])
    assd = float(pooled.sum() / pooled.size)
    mssd = float(pooled.max())
    hd95 = float(max(np.percentile(d_pred_to_ref, 95), np.percentile(d_ref_to_pred, 95)))
    return SegmentationMetrics(dice, iou, hd95, assd, ravd, mssd, pred_ml, ref_ml)


def _foreground(array: np.ndarray, label_value: Optional[int]) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise LiverUNetError("A mask holds NaN or infinite values; masks must be whole numbers.")
    return a == label_value if label_value is not None else a != 0


def surface_voxels(mask: np.ndarray, border_is_inside: bool = True) -> np.ndarray:
    """Voxels of ``mask`` (KJI bool) with a face-neighbour outside it; by default outside the
    image counts as inside (the organisers' ``binary_erosion(..., border_value=1)``)."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    eroded = sitk.BinaryErode(
        image, [1, 1, 1], sitk.sitkCross, 0, 1, boundaryToForeground=border_is_inside
    )
    return mask & ~sitk.GetArrayFromImage(eroded).astype(bool)


def surface_distances(
    ref: np.ndarray, pred: np.ndarray, ijk_to_ras: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(distances from each prediction surface voxel to the reference surface,
    distances from each reference surface voxel to the prediction surface), in mm.

    Both masks must be non-empty. Work happens in the bounding box of both masks plus one voxel
    (same result, much faster on large CT volumes).
    """
    box = _bounding_box(ref | pred, margin=1)
    ref_c, pred_c = ref[box], pred[box]
    surf_ref, surf_pred = surface_voxels(ref_c), surface_voxels(pred_c)
    # A mask filling the whole image has no surface in that definition; then its voxels on the
    # image border are its surface (distances stay finite and meaningful).
    if not surf_ref.any():
        surf_ref = surface_voxels(ref_c, border_is_inside=False)
    if not surf_pred.any():
        surf_pred = surface_voxels(pred_c, border_is_inside=False)
    matrix = np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    directions = matrix / spacing
    if np.allclose(directions.T @ directions, np.eye(3), atol=1e-6):
        # Orthonormal axes: a distance transform with the voxel spacing is exact in mm.
        to_ref = _distance_to(surf_ref, spacing)
        to_pred = _distance_to(surf_pred, spacing)
        return to_ref[surf_pred].astype(np.float64), to_pred[surf_ref].astype(np.float64)
    # Sheared grids (rare: gantry tilt): exact nearest-neighbour search in physical space.
    p_ref = _physical_points(surf_ref, matrix)
    p_pred = _physical_points(surf_pred, matrix)
    return _nearest_distances(p_pred, p_ref), _nearest_distances(p_ref, p_pred)


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(hits[0] - margin, 0), min(hits[-1] + margin + 1, mask.shape[axis])))
    return tuple(box)


def _distance_to(surface: np.ndarray, spacing_ijk: np.ndarray) -> np.ndarray:
    """Distance in mm from every voxel to the nearest voxel of ``surface``."""
    image = sitk.GetImageFromArray(surface.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_ijk))
    signed = sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True, backgroundValue=0
    )
    # Outside the surface set: distance to its nearest voxel (always one of its border voxels).
    # Inside it the true distance is 0 (the map is negative there).
    return np.maximum(sitk.GetArrayFromImage(signed), 0.0)


def _physical_points(mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask)[:, ::-1].astype(np.float64)
    return ijk @ matrix.T  # the translation cancels in distances


def _nearest_distances(points: np.ndarray, targets: np.ndarray, chunk: int = 2048) -> np.ndarray:
    out = np.empty(len(points))
    t2 = np.einsum("ij,ij->i", targets, targets)
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk]
        d2 = np.einsum("ij,ij->i", p, p)[:, None] - 2.0 * p @ targets.T + t2[None, :]
        out[start : start + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def mean_metrics(rows: list[SegmentationMetrics]) -> dict[str, float]:
    """Mean of each metric over several cases (``inf`` stays ``inf``)."""
    if not rows:
        return {}
    keys = rows[0].to_dict().keys()
    return {k: float(np.mean([r.to_dict()[k] for r in rows])) for k in keys}
