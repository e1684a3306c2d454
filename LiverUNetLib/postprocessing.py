"""Clean-up of a thresholded liver mask: keep the largest connected component, fill holes."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected foreground component of a 3D boolean mask (empty stays empty)."""
    if not mask.any():
        return mask.astype(bool)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    components = sitk.ConnectedComponent(image, True)
    relabelled = sitk.RelabelComponent(components, sortByObjectSize=True)
    return sitk.GetArrayFromImage(relabelled) == 1


def fill_holes_per_slice(mask: np.ndarray, slice_axis: int) -> np.ndarray:
    """Fill enclosed holes slice by slice (vessels inside the liver outline belong to the liver)."""
    moved = np.moveaxis(mask.astype(np.uint8), slice_axis, 0)
    filled = np.empty_like(moved)
    for index, plane in enumerate(moved):
        if plane.any():
            filled[index] = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(plane), True, 1))
        else:
            filled[index] = plane
    return np.moveaxis(filled, 0, slice_axis).astype(bool)
