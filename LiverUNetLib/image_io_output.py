"""Writing outputs safely: an output checked before any long work, and every file written atomically.

A file is written to a temporary name in its destination folder, read back (header, grid size, every voxel
byte the header announces) and only then renamed over the destination, so a full disk, a writer that fails
without raising, or a crash never leaves half a file, and an existing file stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Optional, Sequence

import SimpleITK as sitk

from .errors import LiverUNetError
from .image_io_formats import WRITE_ENDINGS, PathLike, file_ending, first_line, strip_ending
from .image_io_nifti import check_nifti_complete


def _unwritable_message(p: Path, exc: BaseException) -> str:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
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
        raise OSError(5, f"the written file does not read back ({first_line(exc)})") from None
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


def atomic_write_pair(p: Path, write, expected_size: Sequence[int]) -> None:
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
