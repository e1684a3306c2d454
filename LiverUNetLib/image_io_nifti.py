"""NIfTI headers read directly: the voxel count a file announces, its orientation codes and voxel size.

ITK's NIfTI reader fills the missing voxels of a cut file with zeros and takes a voxel size of zero as
1 mm, so reading (``image_io``) and the check after every write (``image_io_output``) test the file
itself: a cut NIfTI is refused instead of segmented as a scan with an empty end.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Sequence

from .errors import LiverUNetError


def nifti_orientation_codes(p: Path) -> Optional[tuple[int, int]]:
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


def check_nifti_voxels(p: Path) -> None:
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
