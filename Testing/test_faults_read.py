"""Fault suite, reading images: what a cut, corrupt or impossible file gets.

A file that cannot hold the image its header describes is refused with one clear message; it is
never read with the missing voxels as zeros.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.image_io import read_image, write_image
from LiverUNetLib.volume import Volume


def _scan(shape=(20, 30, 30)) -> Volume:
    rng = np.random.default_rng(3)
    return Volume(rng.integers(0, 1000, shape).astype(np.int16), np.diag([0.8, 0.8, 3.0, 1.0]))


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("ending", [".nii", ".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_cut_image_file_is_refused(tmp_path, ending, keep):
    path = write_image(_scan(), tmp_path / f"scan{ending}")
    _cut(path, keep)
    with pytest.raises(LiverUNetError, match="truncated|cut short|corrupt"):
        read_image(path)


def test_cut_nifti_message_says_what_to_do(tmp_path):
    path = write_image(_scan(), tmp_path / "scan.nii")
    _cut(path, 0.5)
    with pytest.raises(LiverUNetError, match=r"holds \d+ of the \d+ bytes.*copy or export it again"):
        read_image(path)


def test_nifti_with_extra_trailing_bytes_still_reads(tmp_path):
    path = write_image(_scan(), tmp_path / "scan.nii")
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    np.testing.assert_array_equal(read_image(path).array, _scan().array)


def _nifti_with_pixdim(tmp_path: Path, pixdim: tuple[float, float, float]) -> Path:
    """A .nii whose header gives these voxel sizes (pixdim[1..3]), as a broken converter writes."""
    path = write_image(_scan((5, 6, 7)), tmp_path / "scan.nii")
    data = bytearray(path.read_bytes())
    struct.pack_into("<3f", data, 80, *pixdim)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("pixdim", [(0.0, 0.8, 3.0), (-0.8, 0.8, 3.0), (0.8, 0.8, 0.0)])
def test_nifti_with_voxel_size_zero_or_negative_is_refused(tmp_path, pixdim):
    with pytest.raises(LiverUNetError, match=r"voxel size of zero or less .*pixdim"):
        read_image(_nifti_with_pixdim(tmp_path, pixdim))


@pytest.mark.parametrize("spacing", [0.001, 1000.0])
def test_absurd_spacing_in_a_file_is_refused(tmp_path, spacing):
    volume = Volume(np.ones((5, 6, 7), np.int16), np.diag([spacing, spacing, 3.0, 1.0]))
    path = write_image(volume, tmp_path / "scan.nrrd")
    with pytest.raises(LiverUNetError, match=r"scan\.nrrd: .*voxel size .*geometry"):
        read_image(path)


@pytest.mark.parametrize("spacing", [0.001, 1000.0])
def test_absurd_spacing_is_refused_for_segmenting_and_training(spacing):
    """Volumes that come from Slicer nodes or code, not files, are checked where they are used."""
    volume = Volume(np.ones((5, 6, 7), np.int16), np.diag([spacing, spacing, 3.0, 1.0]))
    with pytest.raises(LiverUNetError, match="voxel size"):
        volume.validate_scalar_3d()


def test_extent_larger_than_a_person_is_refused():
    volume = Volume(np.ones((5, 2000, 7), np.int16), np.diag([1.0, 40.0, 3.0, 1.0]))
    with pytest.raises(LiverUNetError, match="spans .* more than any scan"):
        volume.validate_scalar_3d()


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    from test_image_io import write_dicom_series

    array = np.random.default_rng(4).integers(-1000, 1000, (8, 8, 9)).astype(np.int16)
    write_dicom_series(tmp_path / "series", array)
    (tmp_path / "series" / "slice004.dcm").unlink()
    with pytest.raises(LiverUNetError, match="unevenly spaced slices .* slices are missing"):
        read_image(tmp_path / "series")


def test_complete_dicom_series_still_reads(tmp_path):
    from test_image_io import write_dicom_series

    array = np.random.default_rng(4).integers(-1000, 1000, (8, 8, 9)).astype(np.int16)
    write_dicom_series(tmp_path / "series", array)
    np.testing.assert_array_equal(read_image(tmp_path / "series").array, array)


def test_refusals_come_without_raw_itk_warnings(tmp_path, capfd):
    from test_image_io import write_dicom_series

    with pytest.raises(LiverUNetError):
        read_image(_nifti_with_pixdim(tmp_path, (-0.8, 0.8, 3.0)))
    array = np.random.default_rng(4).integers(-1000, 1000, (8, 8, 9)).astype(np.int16)
    write_dicom_series(tmp_path / "series", array)
    (tmp_path / "series" / "slice004.dcm").unlink()
    with pytest.raises(LiverUNetError):
        read_image(tmp_path / "series")
    assert "WARNING" not in capfd.readouterr().err
