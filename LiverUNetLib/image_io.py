"""Read and write 3D images (NIfTI, NRRD, MetaImage, DICOM series) as :class:`Volume`.

SimpleITK does the file work; this module converts its LPS geometry to the RAS matrix of
:class:`Volume` exactly once (``Volume.from_lps`` / ``Volume.lps_geometry``) and turns every
file problem into one :class:`LiverUNetError` that says what is wrong and what to do.

``sitk.GetArrayFromImage`` already returns voxels in KJI order, which is the order
:class:`Volume` keeps, so no transpose happens anywhere here.

Writes are atomic: the image goes to a temporary file in the destination folder, is read back
(header, grid size, and every voxel byte the header announces) and only then renamed over the
destination, so a full disk, a writer that fails without raising, or a crash never leaves half a
file. Reading checks the same byte count for NIfTI, whose reader would otherwise fill the
missing voxels of a cut file with zeros.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import struct
import zlib
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

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
    with _itk_warnings_hidden():
        if p.is_dir():
            image, metadata = _read_dicom_folder(p)
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
            f"({_first_line(exc)}). Use {_SUPPORTED_TEXT} or a DICOM series folder."
        ) from None
    _check_header(p, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents())
    if file_ending(p) in (".nii", ".nii.gz"):
        _check_nifti_voxels(p)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise LiverUNetError(
            f"Cannot read the voxels of {p}: the file is truncated or corrupt ({_first_line(exc)}). "
            "Export or download it again."
        ) from None
    metadata: dict[str, str] = {}
    if file_ending(p) in (".nii", ".nii.gz") and _nifti_orientation_codes(p) == (0, 0):
        metadata["nifti_no_orientation"] = "1"
    if reader.HasMetaDataKey("0008|0060"):  # a single DICOM file read on its own
        metadata["modality"] = reader.GetMetaData("0008|0060").strip()
    return image, metadata


def _nifti_orientation_codes(p: Path) -> Optional[tuple[int, int]]:
    """(qform_code, sform_code) of a NIfTI-1 or NIfTI-2 file; None when unreadable or not NIfTI."""
    try:
        with (gzip.open if _is_gzip(p) else open)(p, "rb") as stream:
            head = stream.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    for order in "<>":
        if len(head) >= 348 and struct.unpack_from(order + "i", head, 0)[0] == 348:
            return struct.unpack_from(order + "2h", head, 252)
        if len(head) >= 540 and struct.unpack_from(order + "i", head, 0)[0] == 540:
            return struct.unpack_from(order + "2i", head, 344)
    return None


def _check_nifti_voxels(p: Path) -> None:
    """Refuse a NIfTI file cut short (ITK's reader fills the missing voxels with zeros) or whose
    header gives a voxel size of zero or less (ITK silently takes 1 mm, or mirrors the image)."""
    try:
        fields = read_nifti_header(p)
        if fields is not None:
            dims, _bitpix, pixdim, _offset = fields
            sizes = [float(v) for v in pixdim[1 : 1 + min(max(int(dims[0]), 0), 3)]]
            if any(not v > 0 for v in sizes):  # also NaN
                raise LiverUNetError(
                    f"{p} has a voxel size of zero or less in its NIfTI header (pixdim {sizes}), so its "
                    "geometry is broken. Export the scan again from the scanner or a DICOM converter."
                )
        check_nifti_complete(p)
    except OSError as exc:
        raise LiverUNetError(
            f"Cannot read the voxels of {p}: {exc.strerror}. The file was cut short (an interrupted "
            "copy or download, or a full disk); copy or export it again."
        ) from None


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
        volume = Volume.from_lps(
            array, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), metadata
        )
        volume.check_plausible_geometry()
    except LiverUNetError as exc:
        raise LiverUNetError(f"{p}: {exc}") from None
    return volume


def _nifti_header_fields(head: bytes) -> Optional[tuple[tuple[int, ...], int, tuple[float, ...], int]]:
    """(dim[0..7], bitpix, pixdim[0..7], vox_offset) of a NIfTI-1 or NIfTI-2 header, either byte
    order; None when ``head`` does not start with one."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack_from(order + "i", head, 0)[0] == 348:
            dims = struct.unpack_from(order + "8h", head, 40)
            bitpix = struct.unpack_from(order + "h", head, 72)[0]
            pixdim = struct.unpack_from(order + "8f", head, 76)
            return dims, bitpix, pixdim, int(struct.unpack_from(order + "f", head, 108)[0])
        if len(head) >= 540 and struct.unpack_from(order + "i", head, 0)[0] == 540:
            bitpix = struct.unpack_from(order + "h", head, 14)[0]
            dims = struct.unpack_from(order + "8q", head, 16)
            pixdim = struct.unpack_from(order + "8d", head, 104)
            return dims, bitpix, pixdim, int(struct.unpack_from(order + "q", head, 168)[0])
    return None


def _nifti_needed_bytes(dims: Sequence[int], bitpix: int, offset: int) -> Optional[int]:
    """Bytes from the file's start up to its last voxel, or None for a header too odd to tell."""
    if not 1 <= dims[0] <= 7 or bitpix <= 0 or bitpix % 8 or offset < 0:
        return None
    count = 1
    for d in dims[1 : dims[0] + 1]:
        if d < 1:
            return None
        count *= int(d)
    return offset + count * (bitpix // 8)


def _nifti_stream_length(p: Path) -> int:
    """Length of the NIfTI data in ``p`` once decompressed; a cut or corrupt gzip stream raises
    OSError (a NIfTI reader would stop at the cut and return zeros for the rest)."""
    with open(p, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    if not gzipped:
        return p.stat().st_size
    total = 0
    try:
        with gzip.open(p, "rb") as stream:
            while chunk := stream.read(1 << 22):
                total += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise OSError(5, f"the compressed data is cut or corrupt ({exc})") from None
    return total


def _gzip_trailer_size(p: Path) -> int:
    """The uncompressed length (modulo 2**32) a complete single-member gzip file records in its
    last four bytes; in a cut file those bytes are arbitrary compressed data."""
    with open(p, "rb") as raw:
        raw.seek(-4, os.SEEK_END)
        return struct.unpack("<I", raw.read(4))[0]


def _is_gzip(p: Path) -> bool:
    with open(p, "rb") as raw:
        return raw.read(2) == b"\x1f\x8b"


def read_nifti_header(p: Path) -> Optional[tuple[tuple[int, ...], int, tuple[float, ...], int]]:
    """(dim, bitpix, pixdim, vox_offset) of the NIfTI file ``p`` (plain or gzipped); None when it
    is not NIfTI. A gzip stream cut inside the header raises OSError."""
    opener = gzip.open if _is_gzip(p) else open
    try:
        with opener(p, "rb") as stream:
            return _nifti_header_fields(stream.read(540))
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise OSError(5, f"the compressed data is cut or corrupt ({exc})") from None


def check_nifti_complete(p: Path) -> None:
    """Raise OSError when the NIfTI file ``p`` holds fewer voxel bytes than its header announces.

    Files that are not NIfTI, or whose header is too odd to compute a size from, pass: the image
    reader judges those.
    """
    fields = read_nifti_header(p)
    if fields is None:
        return
    dims, bitpix, _pixdim, offset = fields
    needed = _nifti_needed_bytes(dims, bitpix, offset)
    if needed is None:
        return
    if _is_gzip(p) and _gzip_trailer_size(p) == needed % (1 << 32):
        return  # the gzip trailer records exactly the announced length: no need to decompress twice
    found = _nifti_stream_length(p)
    if found < needed:
        raise OSError(5, f"the file is truncated: it holds {found} of the {needed} bytes its header announces")


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
        _atomic_write_multi(p, _write, image.GetSize())
    else:
        with atomic_path(p, expected_size=image.GetSize()) as tmp:
            _write(tmp)
    return p


def _unwritable_message(p: Path, exc: BaseException) -> str:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
        reason = "the disk is full"
    return (
        f"Could not write {p}: {reason}. Nothing was written (an existing file is unchanged); check "
        "that the folder exists and is writable and that the disk has free space, or choose another "
        "output path."
    )


#: Characters a staged temporary name adds to an output's file name (".<name>.tmp-<pid>-<hex>",
#: ".<name>.<random>.part", "<name>.resume.part"); the output name must leave room for them.
TEMPORARY_NAME_EXTRA = 32


def check_output_writable(path: PathLike) -> Path:
    """Refuse, before any long work, an output that cannot be written: a file name too long for
    its file system, a path through a file, or a folder that is read-only. Returns the path."""
    p = Path(os.fspath(path)).expanduser()
    existing = p.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LiverUNetError(f"Cannot write {p}: {existing} is a file, not a folder. Choose another output path.")
    check_output_name(p, existing)
    if not _folder_writable(existing):
        raise LiverUNetError(
            f"Cannot write {p}: the folder {existing} is read-only (or you lack permission). "
            "Choose another output folder."
        )
    return p


def check_output_name(path: PathLike, folder: Optional[Path] = None) -> None:
    """Refuse an output name too long for the file system of ``folder`` (default: the nearest
    existing folder above ``path``), keeping room for the temporary name a write stages first."""
    p = Path(os.fspath(path)).expanduser()
    if folder is None:
        folder = p.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    try:
        limit = int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        limit = 255
    if len(p.name.encode()) + TEMPORARY_NAME_EXTRA > limit:
        raise LiverUNetError(
            f"The output name {p.name[:40]}... is {len(p.name.encode())} bytes long; this file system takes "
            f"at most {limit - TEMPORARY_NAME_EXTRA} (with room for the temporary name). Choose a shorter name."
        )


def _folder_writable(folder: Path) -> bool:
    """True when a file can be created in ``folder`` (tried, since root and read-only mounts make
    permission bits misleading)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".liverunet-probe-"):
            return True
    except OSError:
        return False


def _prepare_folder(p: Path) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LiverUNetError(_unwritable_message(p, exc)) from None
    if p.is_dir():
        raise LiverUNetError(f"Cannot write {p}: a folder of that name exists. Choose a file name.")


def verify_written(path: Path, expected_size: Optional[Sequence[int]] = None) -> None:
    """Raise OSError unless ``path`` is a complete file: not empty, flushed to disk and, for an
    image ending, readable back with its header's grid (``expected_size``, IJK, when given) and
    every voxel byte present.

    Image writers (ITK's NIfTI writer among them) can hit a full disk and still return normally,
    leaving a short file; this check is what stops such a file from replacing a good one.
    """
    if not path.is_file():
        raise OSError(5, "the writer produced no file")
    if path.stat().st_size == 0:
        raise OSError(28, "the written file is empty")
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    if file_ending(path) in WRITE_ENDINGS + (".seg.nrrd",):
        _verify_image_file(path, expected_size)


def _verify_image_file(path: Path, expected_size: Optional[Sequence[int]]) -> None:
    if file_ending(path) in (".nii", ".nii.gz"):
        try:
            check_nifti_complete(path)  # ITK reads a cut NIfTI without complaint
        except OSError as exc:
            raise OSError(5, f"the written file came out short, probably a full disk ({exc.strerror})") from None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        size = tuple(reader.GetSize())
        if file_ending(path) not in (".nii", ".nii.gz"):
            reader.Execute()  # the NRRD and MetaImage readers refuse missing voxel data
    except RuntimeError as exc:
        raise OSError(5, f"the written file does not read back ({_first_line(exc)})") from None
    if expected_size is not None and size[: len(expected_size)] != tuple(expected_size):
        raise OSError(5, f"the written file reads back with size {size}, not {tuple(expected_size)}")


@contextlib.contextmanager
def atomic_path(path: PathLike, expected_size: Optional[Sequence[int]] = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` with the same ending; rename it over ``path`` on success.

    Before the rename the temporary file is checked with :func:`verify_written` (``expected_size``:
    the image's IJK size, when known). Any exception inside the block, in the check or in the
    rename removes the temporary file and leaves ``path`` as it was. ``OSError`` and ITK's
    ``RuntimeError`` become :class:`LiverUNetError`; other exceptions (for example
    :class:`~LiverUNetLib.errors.CancelledError`) pass through unchanged.
    """
    p = Path(os.fspath(path)).expanduser()
    _prepare_folder(p)
    ending = file_ending(p) or ""
    tmp = p.parent / f".{strip_ending(p)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{ending}"
    try:
        yield tmp
        verify_written(tmp, expected_size)
        os.replace(tmp, p)
    except (OSError, RuntimeError) as exc:
        _remove_quietly(tmp)
        raise LiverUNetError(_unwritable_message(p, exc)) from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def _atomic_write_multi(p: Path, write, expected_size: Sequence[int]) -> None:
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
        for f in produced:
            if f.name != p.name:
                verify_written(f)  # the data file, before the header names it
        verify_written(tmpdir / p.name, expected_size)
        for f in produced:
            os.replace(f, p.parent / f.name)
    except (OSError, RuntimeError) as exc:
        raise LiverUNetError(_unwritable_message(p, exc)) from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
