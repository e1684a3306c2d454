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


#: Weights of a slice and its two neighbours in ``smooth_across_slices`` (a 3-tap binomial kernel).
SLICE_SMOOTHING_WEIGHTS = (0.25, 0.5, 0.25)


def smooth_across_slices(probability: np.ndarray, axis: int = 0) -> np.ndarray:
    """Average each slice's probability with its two neighbours (1/4, 1/2, 1/4) along ``axis``, in place.

    A 2D network decides each slice on its own, so a region it half-believes in flickers from slice to
    slice; averaging along the slice axis before the threshold lets the neighbours vote. On the CHAOS
    cross-validation it raised the shipped models' Dice for 14 of 15 held-out subjects (+0.003) and lowered
    HD95 and ASSD for all seven recipes tried (bench/studies/slice_smoothing.py). The end slices count themselves in
    place of the missing neighbour. Works slice by slice so a large CT needs no second full-size copy.
    """
    slices = np.moveaxis(probability, axis, 0)  # a view: writing to it writes to ``probability``
    count = slices.shape[0]
    if count < 2:
        return probability
    side, centre, _ = SLICE_SMOOTHING_WEIGHTS
    previous = slices[0].copy()
    for index in range(count):
        current = slices[index].copy()
        following = slices[index + 1] if index + 1 < count else current
        slices[index] = centre * current + side * (previous + following)
        previous = current
    return probability
