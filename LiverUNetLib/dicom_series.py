"""A DICOM series folder read as one volume: the series chosen, its slices checked, its voxels kept small.

A folder may hold several series (the largest is read, and ``reading_notes`` says so) or sub-folders; a
series with missing slices is refused, because ITK would otherwise place the remaining slices on an even
grid where they were not.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import LiverUNetError
from .image_io_formats import SUPPORTED_TEXT, check_header, first_line


def _dicom_series(folder: Path) -> list[tuple[int, Path, str, list[str]]]:
    """Every DICOM series under ``folder``: (number of files, folder, series UID, file names)."""
    reader = sitk.ImageSeriesReader()
    found = []
    for root, _dirs, _files in os.walk(folder):
        for uid in reader.GetGDCMSeriesIDs(root) or ():
            names = list(reader.GetGDCMSeriesFileNames(root, uid))
            if names:
                found.append((len(names), Path(root), uid, names))
        if found and Path(root) == folder:
            break  # series at the top level win; do not wander into sub-folders
    return found


def read_dicom_folder(folder: Path) -> tuple[sitk.Image, dict[str, str]]:
    """The largest DICOM series under ``folder`` and its metadata (series UID, file count, modality)."""
    series = _dicom_series(folder)
    if not series:
        raise LiverUNetError(
            f"No DICOM series found in folder {folder}. Point to the folder holding the .dcm "
            f"slices of one series, or to an image file ({SUPPORTED_TEXT})."
        )
    series.sort(key=lambda s: s[0], reverse=True)  # the largest series wins
    count, root, uid, names = series[0]
    if count < 2:
        raise LiverUNetError(
            f"The DICOM series in {root} has a single slice, a 2D image; a 3D volume (several "
            "slices) is needed."
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise LiverUNetError(
            f"Cannot read the DICOM series in {root} ({first_line(exc)}). The files may be "
            "incomplete or compressed with an unsupported codec; export the series again."
        ) from None
    check_header(root, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel())
    _check_even_slices(root, reader, image)
    metadata = {"series_uid": uid, "dicom_files": str(count)}
    if len(series) > 1:
        metadata["dicom_series_ignored"] = str(len(series) - 1)
    with contextlib.suppress(RuntimeError, IndexError):
        if reader.HasMetaDataKey(0, "0008|0060"):
            metadata["modality"] = reader.GetMetaData(0, "0008|0060").strip()
    return _narrow_integers(image), metadata


#: Largest relative difference between the gaps of neighbouring DICOM slices still taken as one
#: evenly spaced volume (scanners round positions; a missing slice doubles a gap).
SLICE_GAP_TOLERANCE = 0.1


def _check_even_slices(root: Path, reader: sitk.ImageSeriesReader, image: sitk.Image) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced (a missing or cut file): ITK then
    warns and builds the volume on a grid of the average spacing, placing slices where they were
    not. Slices without a readable position are left to ITK."""
    normal = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2]
    positions = []
    for index in range(len(reader.GetFileNames())):
        try:
            text = reader.GetMetaData(index, "0020|0032")
            positions.append(float(np.dot([float(v) for v in text.split("\\")[:3]], normal)))
        except (RuntimeError, ValueError, IndexError):
            return
    gaps = np.abs(np.diff(np.sort(positions)))
    if gaps.size < 2:
        return
    typical = float(np.median(gaps))
    if typical <= 0 or np.max(np.abs(gaps - typical)) > SLICE_GAP_TOLERANCE * typical + 1e-3:
        raise LiverUNetError(
            f"The DICOM series in {root} has unevenly spaced slices (gaps from {gaps.min():.3g} to "
            f"{gaps.max():.3g} mm, typically {typical:.3g} mm): slices are missing or a file is cut. "
            "Export the complete series again."
        )


def _narrow_integers(image: sitk.Image) -> sitk.Image:
    """GDCM returns rescaled CT as 32-bit integers; keep them as int16 when every value fits
    (lossless, half the memory). Other types are left alone."""
    if image.GetPixelID() not in (sitk.sitkInt32, sitk.sitkUInt32, sitk.sitkInt64, sitk.sitkUInt64):
        return image
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    if stats.GetMinimum() >= -32768 and stats.GetMaximum() <= 32767:
        return sitk.Cast(image, sitk.sitkInt16)
    return image
