"""Liver masks as files: any label (a label image or a Slicer ``.seg.nrrd``) read as a 0/1 liver mask on
the image's grid, and a mask written by its file ending.

The liver is never guessed from a label: fractions and several non-zero values without a label value are
refused (:func:`liver_voxels`). The ``.seg.nrrd`` format itself is in :mod:`.segmentation_file`, imported
inside the functions that need it, so that module can offer these names too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import LiverUNetError
from .image_io import PathLike, file_ending, read_image
from .volume import Volume


def read_label_volume(
    path: PathLike,
    label_value: Optional[int] = None,
    segment_name: Optional[str] = None,
    reference: Optional[Volume] = None,
) -> Volume:
    """A uint8 0/1 mask from an ordinary label image or a ``.seg.nrrd``.

    * ``.seg.nrrd``: the segment ``segment_name`` (default: "Liver" case-insensitively, else an
      error listing the names). ``label_value`` picks a segment by its value instead when given.
    * label image: voxels equal to ``label_value``; without it the non-zero voxels, refused
      (:func:`liver_voxels`) when they hold several values or fractions.

    With ``reference`` the mask is placed onto the reference grid when it is a sub-grid of it
    (Slicer may crop segmentations to their content); otherwise a different grid is an error.
    """
    from .segmentation_file import _pick_segment, _read_raw, is_segmentation_file

    p = Path(os.fspath(path)).expanduser()
    if is_segmentation_file(p):
        raw = _read_raw(p)
        if label_value is not None and segment_name is None:
            hits = [i for i, s in enumerate(raw.segments) if s.label_value == label_value]
            if len(hits) != 1:
                raise LiverUNetError(
                    f"Segmentation {p} has {len(hits)} segments with label value {label_value}; "
                    f"its segments are {[(s.name, s.label_value) for s in raw.segments]}. "
                    "Choose one by name instead."
                )
            index = hits[0]
        else:
            index = _pick_segment(raw.segments, segment_name, raw.source)
        info = raw.segments[index]
        mask = (raw.layers[raw.segment_layers[index]] == info.label_value).astype(np.uint8)
        volume = Volume(mask, raw.ijk_to_ras, {"source": raw.source, "segment": info.name})
    else:
        if segment_name is not None:
            raise LiverUNetError(
                f"{p} is an ordinary label image without segment names; use a label value instead."
            )
        image = read_image(p)
        mask = liver_voxels(image.array, p, label_value)
        volume = image.with_array(mask.astype(np.uint8))
        volume.metadata["label_value"] = "nonzero" if label_value is None else str(label_value)
    if reference is not None:
        volume = place_on_grid(volume, reference)
    return volume


def liver_voxels(
    values: np.ndarray, source: PathLike, label_value: Optional[int] = None, empty_label_value: Optional[int] = None
) -> np.ndarray:
    """The liver voxels (bool) of a label image: those equal to ``label_value``, or without it
    every non-zero voxel other than ``empty_label_value``.

    The liver is never guessed: a label holding fractions (a probability map) is refused, and so
    is one whose non-zero voxels hold several values (kidneys and spleen beside the liver) when
    no ``label_value`` says which is the liver; the message lists the values found.
    """
    name = Path(os.fspath(source)).name
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise LiverUNetError(f"The label {name} holds NaN or infinite voxels; a label image holds whole numbers.")
        if not np.array_equal(values, np.round(values)):
            raise LiverUNetError(
                f"The label {name} holds fractional values (for example {_sample_values(values)}), like a "
                "probability map; a label image holds whole numbers. Threshold it first."
            )
    if label_value is not None:
        mask = values == label_value
        if not mask.any() and np.any(values != 0):
            raise LiverUNetError(
                f"The label {name} holds no voxel with value {label_value}; its non-zero values are "
                f"{_sample_values(values[values != 0])}. Give the liver's value with --label-value N."
            )
        return mask
    mask = values != 0
    if empty_label_value is not None:
        mask &= values != empty_label_value
    found = values[mask]
    if found.size and found.min() != found.max():
        raise LiverUNetError(
            f"The label {name} holds several non-zero values {_sample_values(found)}, so which one is the "
            "liver cannot be told. Give the liver's value with --label-value N."
        )
    return mask


def _sample_values(values: np.ndarray, most: int = 8) -> str:
    """Up to ``most`` distinct values of ``values`` as a short list for a message."""
    distinct = np.unique(values)
    shown = ", ".join(f"{v:g}" for v in distinct[:most].tolist())
    return f"[{shown}{', ...' if distinct.size > most else ''}]"


def place_on_grid(mask: Volume, reference: Volume, tolerance_mm: float = 1e-2) -> Volume:
    """``mask`` on ``reference``'s grid when both share orientation and spacing and the mask's
    voxels fall exactly on reference voxels (a cropped or padded copy); voxels outside the
    reference are dropped only if they are zero. Otherwise :class:`LiverUNetError`."""
    if mask.same_grid(reference, tolerance_mm):
        return mask
    a, b = mask.ijk_to_ras[:3, :3], reference.ijk_to_ras[:3, :3]
    grid_error = LiverUNetError(
        f"The label's grid (shape {mask.array.shape}, spacing "
        f"{np.round(mask.spacing_ijk, 4).tolist()}) differs from the image's grid (shape "
        f"{reference.array.shape}, spacing {np.round(reference.spacing_ijk, 4).tolist()}) or is "
        "placed elsewhere in space. Resample the label onto the image (in Slicer: export the "
        "segment with the image as reference geometry)."
    )
    if not np.allclose(a, b, atol=1e-4 * max(1.0, float(np.abs(b).max()))):
        raise grid_error
    shift = np.linalg.solve(b, mask.origin_ras - reference.origin_ras)  # IJK offset of the mask
    rounded = np.round(shift)
    if np.max(np.abs(reference.ijk_to_ras[:3, :3] @ (shift - rounded))) > tolerance_mm:
        raise grid_error
    off_ijk = rounded.astype(int)
    out = np.zeros(reference.array.shape, dtype=mask.array.dtype)
    src = mask.array
    src_slices, dst_slices = [], []
    for axis_kji in range(3):
        o = off_ijk[2 - axis_kji]
        n_src, n_dst = src.shape[axis_kji], out.shape[axis_kji]
        lo, hi = max(o, 0), min(o + n_src, n_dst)
        if hi <= lo:
            lo = hi = 0
        dst_slices.append(slice(lo, hi))
        src_slices.append(slice(lo - o, hi - o) if hi > lo else slice(0, 0))
    out[tuple(dst_slices)] = src[tuple(src_slices)]
    if int(np.count_nonzero(out)) != int(np.count_nonzero(src)):
        raise LiverUNetError(
            "The label reaches outside the image's grid; resample it onto the image first "
            "(in Slicer: export the segment with the image as reference geometry)."
        )
    return Volume(out, reference.ijk_to_ras.copy(), dict(mask.metadata))


#: Endings a liver mask (and a probability map, except .seg.nrrd) can be written to.
MASK_ENDINGS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")


def check_mask_output(path: PathLike, probability: bool = False) -> Path:
    """Refuse an output path whose ending cannot hold a mask (or a probability map) before any
    long work starts, so a typo does not cost a whole segmentation."""
    p = Path(os.fspath(path)).expanduser()
    ending = file_ending(p)
    allowed = MASK_ENDINGS[1:] if probability else MASK_ENDINGS
    if ending not in allowed:
        what = "A probability map" if probability else "A liver mask"
        raise LiverUNetError(
            f"{what} cannot be written to {p.name}: use one of {', '.join(allowed)}."
        )
    if p.is_dir():
        raise LiverUNetError(f"{p} is a folder; give a file name ending in {', '.join(allowed)}.")
    return p


def write_liver_mask(mask: Volume, path: PathLike) -> Path:
    """Write a 0/1 liver mask by ending: ``.seg.nrrd`` as a Slicer segmentation with the Liver
    segment (name, colour, terminology), otherwise as a uint8 image. Atomic."""
    from .image_io import write_image
    from .segmentation_file import liver_segment_info, write_segmentation

    p = check_mask_output(path)
    labels = (np.asarray(mask.array) != 0).astype(np.uint8)
    volume = Volume(labels, mask.ijk_to_ras.copy(), dict(mask.metadata))
    if file_ending(p) == ".seg.nrrd":
        return write_segmentation(volume, p, [liver_segment_info()])
    return write_image(volume, p)
