"""Image file names and what an image must be: the endings read and written, and the header checks.

Shared by reading (``image_io``, ``dicom_series``) and writing (``image_io_output``), so an ending and a
refusal read the same everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from .errors import LiverUNetError

PathLike = Union[str, "os.PathLike[str]"]

#: File endings ``write_image`` understands, longest first so ``.nii.gz`` wins over ``.gz``.
WRITE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
#: File endings ``read_image`` is known to handle (others are still tried through SimpleITK).
READ_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")

SUPPORTED_TEXT = "NIfTI (.nii, .nii.gz), NRRD (.nrrd), MetaImage (.mha, .mhd)"


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


def first_line(exc: BaseException) -> str:
    """The most useful line of an ITK exception (they span many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:
        low = line.lower()
        if "description" in low or "unable" in low or "could not" in low or "cannot" in low:
            return line.replace("itk::ERROR: ", "")
    return lines[-1] if lines else type(exc).__name__


def check_header(p: Path, dimension: int, size: tuple[int, ...], components: int) -> None:
    """Refuse what is not one 3D scalar volume (colour, 2D, several time points), in one line each."""
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
