"""Read and write 3D images (NIfTI, NRRD, MetaImage, DICOM series) as :class:`Volume`.

SimpleITK does the file work; this module converts its LPS geometry to the RAS matrix of
:class:`Volume` exactly once (``Volume.from_lps`` / ``Volume.lps_geometry``) and turns every
file problem into one :class:`LiverUNetError` that says what is wrong and what to do.

``sitk.GetArrayFromImage`` already returns voxels in KJI order, which is the order
:class:`Volume` keeps, so no transpose happens anywhere here.

Writes are atomic: the image goes to a temporary file in the destination folder and is renamed
over the destination only when complete, so a full disk or a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import SimpleITK as sitk

from .errors import LiverUNetError
from .volume import Volume

PathLike = Union[str, "os.PathLike[str]"]

#: File endings ``write_image`` understands, longest first so ``.nii.gz`` wins over ``.gz``.
WRITE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
#: File endings ``read_image`` is known to handle (others are still tried through SimpleITK).
READ_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")

_SUPPORTED_TEXT = "NIfTI (.nii, .nii.gz), NRRD (.nrrd), MetaImage (.mha, .mhd)"

# Pixel types SimpleITK can write for every format above; others are converted first.
_WRITE_CASTS = {
    np.dtype(bool): np.uint8,
    np.dtype(np.float16): np.float32,
}


def file_ending(path: PathLike) -> str:
    """The image ending of ``path`` in lower case (``.nii.gz``, ``.seg.nrrd``, ``.nrrd`` ...)."""
    name = os.fspath(path).lower()
    for ending in (".seg.nrrd", ".nii.gz") + WRITE_ENDINGS + READ_ENDINGS:
        if name.endswith(ending):
            return ending
    return Path(name).suffix


def strip_ending(path: PathLike) -> str:
    """The file name of ``path`` without its image ending (``case_01.nii.gz`` -> ``case_01``)."""
    name = Path(os.fspath(path)).name
    ending = file_ending(name)
    return name[: len(name) - len(ending)] if ending and name.lower().endswith(ending) else name


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
    if p.is_dir():
        image, metadata = _read_dicom_folder(p)
    else:
        image, metadata = _read_file(p)
    return _volume_from_sitk(image, p, metadata)


def _read_file(p: Path) -> tuple[sitk.Image, dict[str, str]]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise LiverUNetError(
            f"Cannot read {p}: the file is corrupt or not an image format SimpleITK knows "
            f"({_first_line(exc)}). Use {_SUPPORTED_TEXT} or a DICOM series folder."
        ) from None
    _check_header(p, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents())
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise LiverUNetError(
            f"Cannot read the voxels of {p}: the file is truncated or corrupt ({_first_line(exc)}). "
            "Export or download it again."
        ) from None
    metadata: dict[str, str] = {}
    if reader.HasMetaDataKey("0008|0060"):  # a single DICOM file read on its own
        metadata["modality"] = reader.GetMetaData("0008|0060").strip()
    return image, metadata


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


def _read_dicom_folder(folder: Path) -> tuple[sitk.Image, dict[str, str]]:
    series = _dicom_series(folder)
    if not series:
        raise LiverUNetError(
            f"No DICOM series found in folder {folder}. Point to the folder holding the .dcm "
            f"slices of one series, or to an image file ({_SUPPORTED_TEXT})."
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
            f"Cannot read the DICOM series in {root} ({_first_line(exc)}). The files may be "
            "incomplete or compressed with an unsupported codec; export the series again."
        ) from None
    _check_header(root, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel())
    metadata = {"series_uid": uid, "dicom_files": str(count)}
    if len(series) > 1:
        metadata["dicom_series_ignored"] = str(len(series) - 1)
    with contextlib.suppress(RuntimeError, IndexError):
        if reader.HasMetaDataKey(0, "0008|0060"):
            metadata["modality"] = reader.GetMetaData(0, "0008|0060").strip()
    return _narrow_integers(image), metadata


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


def _check_header(p: Path, dimension: int, size: tuple[int, ...], components: int) -> None:
    if components > 1:
        raise LiverUNetError(
            f"{p} is a vector or colour (RGB) image with {components} components per voxel; a "
            "grey-scale scalar volume is needed. Convert it to one channel first."
        )
    if dimension == 2 or (dimension == 3 and min(size) == 1):
        raise LiverUNetError(
            f"{p} is a 2D image (size {tuple(size)}); a 3D volume with several slices is needed."
        )
    if dimension == 4 and size[3] != 1:
        raise LiverUNetError(
            f"{p} is a 4D image (size {tuple(size)}, {size[3]} time points or channels); a single "
            "3D volume is needed. Extract one time point or channel first."
        )
    if dimension not in (3, 4):
        raise LiverUNetError(f"{p} has {dimension} dimensions; a 3D volume is needed.")


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
        return Volume.from_lps(
            array, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), metadata
        )
    except LiverUNetError as exc:
        raise LiverUNetError(f"{p}: {exc}") from None


def _first_line(exc: BaseException) -> str:
    """The most useful line of an ITK exception (they span many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:
        low = line.lower()
        if "description" in low or "unable" in low or "could not" in low or "cannot" in low:
            return line.replace("itk::ERROR: ", "")
    return lines[-1] if lines else type(exc).__name__


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
            f"Cannot write {p}: unknown file ending {ending or '(none)'}. Use {_SUPPORTED_TEXT}."
        )
    image = volume_to_sitk(volume)
    compress = ending != ".nii"

    def _write(tmp: Path) -> None:
        sitk.WriteImage(image, str(tmp), compress)

    if ending == ".mhd":
        _atomic_write_multi(p, _write)
    else:
        with atomic_path(p) as tmp:
            _write(tmp)
    return p


def _unwritable_message(p: Path, exc: BaseException) -> str:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
        reason = "the disk is full"
    return (
        f"Could not write {p}: {reason}. Nothing was written; check that the folder exists and "
        "is writable and that the disk has free space, or choose another output path."
    )


def _prepare_folder(p: Path) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LiverUNetError(_unwritable_message(p, exc)) from None
    if p.is_dir():
        raise LiverUNetError(f"Cannot write {p}: a folder of that name exists. Choose a file name.")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` with the same ending; rename it over ``path`` on success.

    Any exception inside the block (or in the rename) removes the temporary file. ``OSError`` and
    ITK's ``RuntimeError`` become :class:`LiverUNetError`; other exceptions (for example
    :class:`~LiverUNetLib.errors.CancelledError`) pass through unchanged.
    """
    p = Path(os.fspath(path)).expanduser()
    _prepare_folder(p)
    ending = file_ending(p) or ""
    tmp = p.parent / f".{strip_ending(p)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{ending}"
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(5, "the writer produced no file", str(tmp))
        os.replace(tmp, p)
    except (OSError, RuntimeError) as exc:
        _remove_quietly(tmp)
        raise LiverUNetError(_unwritable_message(p, exc)) from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def _atomic_write_multi(p: Path, write) -> None:
    """Atomic-ish write of a header + data file pair (.mhd + .zraw): build both in a private
    temporary folder next to ``p``, then move the data file(s) first and the header last."""
    _prepare_folder(p)
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{p.name}.tmp-", dir=p.parent))
    except OSError as exc:
        raise LiverUNetError(_unwritable_message(p, exc)) from None
    try:
        write(tmpdir / p.name)
        produced = sorted(tmpdir.iterdir(), key=lambda f: f.name == p.name)  # header last
        if not any(f.name == p.name for f in produced):
            raise OSError(5, "the writer produced no file", str(p))
        for f in produced:
            os.replace(f, p.parent / f.name)
    except (OSError, RuntimeError) as exc:
        raise LiverUNetError(_unwritable_message(p, exc)) from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
