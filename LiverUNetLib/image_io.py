"""Read and write 3D images (NIfTI, NRRD, MetaImage, DICOM series) as :class:`Volume`.

SimpleITK does the file work; this module converts its LPS geometry to the RAS matrix of
:class:`Volume` exactly once (``Volume.from_lps`` / ``Volume.lps_geometry``) and turns every
file problem into one :class:`LiverUNetError` that says what is wrong and what to do.

``sitk.GetArrayFromImage`` already returns voxels in KJI order, which is the order
:class:`Volume` keeps, so no transpose happens anywhere here.

Writes are atomic (``image_io_output``). The pieces live beside this module: file endings and header
checks in ``image_io_formats``, NIfTI byte counts in ``image_io_nifti``, DICOM folders in
``dicom_series``, output checks and atomic writes in ``image_io_output``; every public name stays
importable from here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from .dicom_series import SLICE_GAP_TOLERANCE, read_dicom_folder
from .errors import LiverUNetError
from .image_io_formats import (READ_ENDINGS, SUPPORTED_TEXT, WRITE_ENDINGS, PathLike, check_header, file_ending,
                               first_line, strip_ending)
from .image_io_nifti import check_nifti_complete, check_nifti_voxels, nifti_orientation_codes, read_nifti_header
from .image_io_output import (TEMPORARY_NAME_EXTRA, atomic_path, atomic_write_pair, check_output_name,
                              check_output_writable, verify_written)
from .volume import Volume

__all__ = ["PathLike", "READ_ENDINGS", "WRITE_ENDINGS", "SLICE_GAP_TOLERANCE", "TEMPORARY_NAME_EXTRA", "file_ending",
           "strip_ending", "read_image", "reading_notes", "read_nifti_header", "check_nifti_complete",
           "volume_to_sitk", "write_image", "check_output_writable", "check_output_name", "verify_written",
           "atomic_path"]

# Pixel types SimpleITK can write for every format above; others are converted first.
_WRITE_CASTS = {
    np.dtype(bool): np.uint8,
    np.dtype(np.float16): np.float32,
}


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def read_image(path: PathLike) -> Volume:
    """Read a 3D scalar image file or a DICOM series folder.

    Integer voxel types are kept (no needless cast to float). ``metadata["source"]`` holds the
    path; DICOM folders also give ``modality`` and ``series_uid`` when the files carry them.
    Raises :class:`LiverUNetError` for a missing, unreadable or corrupt file, a 2D image, and
    4D, vector or RGB images.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise LiverUNetError(f"Image not found: {p}. Check the path (and the working folder).")
    with _itk_warnings_hidden():
        if p.is_dir():
            image, metadata = read_dicom_folder(p)
        else:
            image, metadata = _read_file(p)
    return _volume_from_sitk(image, p, metadata)


@contextlib.contextmanager
def _itk_warnings_hidden() -> Iterator[None]:
    """Hide ITK's multi-line warnings (printed straight to stderr) while reading: what they report
    (missing DICOM slices, odd NIfTI scales) is refused here with one clear line instead."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_file(p: Path) -> tuple[sitk.Image, dict[str, str]]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise LiverUNetError(
            f"Cannot read {p}: the file is corrupt or not an image format SimpleITK knows "
            f"({first_line(exc)}). Use {SUPPORTED_TEXT} or a DICOM series folder."
        ) from None
    check_header(p, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents())
    if file_ending(p) in (".nii", ".nii.gz"):
        check_nifti_voxels(p)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise LiverUNetError(
            f"Cannot read the voxels of {p}: the file is truncated or corrupt ({first_line(exc)}). "
            "Export or download it again."
        ) from None
    metadata: dict[str, str] = {}
    if file_ending(p) in (".nii", ".nii.gz") and nifti_orientation_codes(p) == (0, 0):
        metadata["nifti_no_orientation"] = "1"
    if reader.HasMetaDataKey("0008|0060"):  # a single DICOM file read on its own
        metadata["modality"] = reader.GetMetaData("0008|0060").strip()
    return image, metadata


def reading_notes(volume: Volume) -> list[str]:
    """What the user should know about how ``volume`` was read, one sentence each: that a DICOM
    folder held several series and which one was taken (the one with the most files), or that a
    NIfTI header gave no orientation."""
    notes = []
    ignored = int(volume.metadata.get("dicom_series_ignored", "0") or 0)
    if ignored:
        notes.append(
            f"the folder holds {ignored + 1} DICOM series; the largest was read ({volume.metadata.get('dicom_files')} "
            f"files, series UID {volume.metadata.get('series_uid')}). To use another, point to a folder holding "
            "only its files."
        )
    if volume.metadata.get("nifti_no_orientation") == "1":
        notes.append(
            "the NIfTI header gives no orientation (qform and sform codes 0), so its axes were taken as "
            "right-to-left, front-to-back, foot-to-head; check the result's orientation, or convert the scan "
            "again with its orientation."
        )
    return notes


def _volume_from_sitk(image: sitk.Image, p: Path, metadata: dict[str, str]) -> Volume:
    if image.GetDimension() == 4:  # 4D with a single time point: take the 3D volume
        size = list(image.GetSize())
        image = sitk.Extract(image, size[:3] + [0], [0, 0, 0, 0])
        if min(image.GetSize()) == 1:
            raise LiverUNetError(f"{p} is a 2D image; a 3D volume with several slices is needed.")
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise LiverUNetError(f"{p} holds complex voxels; a real-valued scalar volume is needed.")
    array = sitk.GetArrayFromImage(image)  # KJI, native type
    metadata = dict(metadata)
    metadata["source"] = str(p)
    try:
        volume = Volume.from_lps(
            array, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), metadata
        )
        volume.check_plausible_geometry()
    except LiverUNetError as exc:
        raise LiverUNetError(f"{p}: {exc}") from None
    return volume


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def volume_to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image holding ``volume``'s voxels with its geometry converted to LPS."""
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise LiverUNetError(f"Only 3D volumes can be written; this one has shape {array.shape}.")
    cast = _WRITE_CASTS.get(array.dtype)
    if cast is not None:
        array = array.astype(cast)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    spacing, origin, direction = volume.lps_geometry()
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def write_image(volume: Volume, path: PathLike) -> Path:
    """Write ``volume`` to ``path``; the format follows the ending (.nii.gz, .nii, .nrrd, .mha, .mhd).

    NRRD, NIfTI (.nii.gz) and MetaImage are written compressed. The file appears atomically;
    on any failure nothing is left behind and :class:`LiverUNetError` says what to do.
    """
    p = Path(os.fspath(path)).expanduser()
    ending = file_ending(p)
    if ending == ".seg.nrrd":
        raise LiverUNetError(
            f"{p} is a segmentation file name; write segmentations with "
            "LiverUNetLib.segmentation_file.write_segmentation (or name the file .nrrd)."
        )
    if ending not in WRITE_ENDINGS:
        raise LiverUNetError(
            f"Cannot write {p}: unknown file ending {ending or '(none)'}. Use {SUPPORTED_TEXT}."
        )
    image = volume_to_sitk(volume)
    compress = ending != ".nii"

    def _write(tmp: Path) -> None:
        sitk.WriteImage(image, str(tmp), compress)

    if ending == ".mhd":
        atomic_write_pair(p, _write, image.GetSize())
    else:
        with atomic_path(p, expected_size=image.GetSize()) as tmp:
            _write(tmp)
    return p
