"""image_io: formats, exact geometry, DICOM folders, bad input, atomic writes."""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest
import SimpleITK as sitk

from LiverUNetLib import image_io
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.image_io import read_image, write_image
from LiverUNetLib.volume import Volume

FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"]
# NIfTI stores the affine as float32; the others keep doubles.
GEOMETRY_TOLERANCE = {".nii.gz": 1e-4, ".nii": 1e-4, ".nrrd": 1e-9, ".mha": 1e-9, ".mhd": 1e-9}


def oblique_volume(dtype=np.int16, shape=(5, 6, 7)) -> Volume:
    angle = 0.3
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]]
    )
    tilt = np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rot @ tilt @ np.diag([0.7, 1.3, 4.5])
    matrix[:3, 3] = [-12.5, 33.25, 101.0]
    rng = np.random.default_rng(1)
    array = rng.integers(-500, 1500, size=shape).astype(dtype)
    return Volume(array, matrix)


@pytest.mark.parametrize("ending", FORMATS)
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_round_trip_keeps_voxels_type_and_geometry(tmp_path, ending, dtype):
    vol = oblique_volume(dtype)
    path = tmp_path / f"image{ending}"
    write_image(vol, path)
    back = read_image(path)
    assert back.array.dtype == vol.array.dtype
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=GEOMETRY_TOLERANCE[ending])
    assert back.metadata["source"] == str(path)
    # Only the image (and the .mhd data file) is left: no temporary files.
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    expected = ["image.mhd", "image.zraw"] if ending == ".mhd" else [path.name]
    assert leftovers == expected


def test_ras_is_really_ras(tmp_path):
    """A NIfTI written by SimpleITK with a known LPS origin reads back with R and A negated."""
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    image.SetOrigin((10.0, 20.0, 30.0))
    image.SetSpacing((1.0, 2.0, 3.0))
    path = tmp_path / "lps.nii.gz"
    sitk.WriteImage(image, str(path))
    vol = read_image(path)
    np.testing.assert_allclose(vol.origin_ras, [-10.0, -20.0, 30.0])
    np.testing.assert_allclose(vol.ijk_to_ras[:3, :3], np.diag([-1.0, -2.0, 3.0]))


def test_bool_array_is_written_as_uint8(tmp_path):
    vol = Volume(np.ones((3, 3, 3), dtype=bool))
    write_image(vol, tmp_path / "m.nrrd")
    assert read_image(tmp_path / "m.nrrd").array.dtype == np.uint8


def test_missing_file(tmp_path):
    with pytest.raises(LiverUNetError, match="not found"):
        read_image(tmp_path / "nothing.nii.gz")


def test_corrupt_file(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(LiverUNetError, match="corrupt"):
        read_image(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.nrrd"
    write_image(oblique_volume(shape=(20, 20, 20)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LiverUNetError, match="corrupt|truncated"):
        read_image(path)


def test_2d_image_is_refused(tmp_path):
    path = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.int16)), str(path))
    with pytest.raises(LiverUNetError, match="2D"):
        read_image(path)


def test_single_slice_3d_image_is_refused(tmp_path):
    path = tmp_path / "one.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((1, 8, 9), np.int16)), str(path))
    with pytest.raises(LiverUNetError, match="2D"):
        read_image(path)


def test_4d_image_is_refused(tmp_path):
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 6), np.int16), isVector=False), str(path))
    with pytest.raises(LiverUNetError, match="4D"):
        read_image(path)


def test_4d_image_with_one_time_point_reads_as_3d(tmp_path):
    path = tmp_path / "one_frame.nrrd"
    values = np.arange(3 * 4 * 5, dtype=np.int16).reshape(1, 3, 4, 5)
    sitk.WriteImage(sitk.GetImageFromArray(values, isVector=False), str(path))
    vol = read_image(path)
    assert vol.array.shape == (3, 4, 5)
    np.testing.assert_array_equal(vol.array, values[0])


def test_rgb_image_is_refused(tmp_path):
    path = tmp_path / "colour.nrrd"
    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(path))
    with pytest.raises(LiverUNetError, match="RGB|vector"):
        read_image(path)


def test_nan_voxels_are_read_but_refused_for_segmentation(tmp_path):
    vol = oblique_volume(np.float32)
    vol.array[1, 2, 3] = np.nan
    write_image(vol, tmp_path / "nan.nrrd")
    back = read_image(tmp_path / "nan.nrrd")
    assert np.isnan(back.array[1, 2, 3])
    with pytest.raises(LiverUNetError, match="NaN"):
        back.validate_scalar_3d()


def test_unknown_ending(tmp_path):
    with pytest.raises(LiverUNetError, match="ending"):
        write_image(oblique_volume(), tmp_path / "x.png")


def test_seg_nrrd_ending_points_to_segmentation_writer(tmp_path):
    with pytest.raises(LiverUNetError, match="write_segmentation"):
        write_image(oblique_volume(), tmp_path / "x.seg.nrrd")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(LiverUNetError, match="Could not write"):
            write_image(oblique_volume(), folder / "x.nii.gz")
    finally:
        folder.chmod(stat.S_IRWXU)


def test_output_under_a_file_is_a_clear_error(tmp_path):
    """Works as root too: a path whose 'folder' is a regular file cannot be written."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(LiverUNetError, match="Could not write"):
        write_image(oblique_volume(), blocker / "x.nii.gz")


def test_disk_full_leaves_no_partial_file(tmp_path, monkeypatch):
    real_write = sitk.WriteImage

    def half_then_full(image, name, *args, **kwargs):
        real_write(image, name, *args, **kwargs)  # a partial file exists ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(image_io.sitk, "WriteImage", half_then_full)
    target = tmp_path / "out.nii.gz"
    with pytest.raises(LiverUNetError, match="disk is full"):
        write_image(oblique_volume(), target)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "out.nrrd"
    first = oblique_volume()
    write_image(first, target)
    before = target.read_bytes()

    def fail(*_args, **_kwargs):
        raise RuntimeError("itk::ERROR: ImageFileWriter: could not write")

    monkeypatch.setattr(image_io.sitk, "WriteImage", fail)
    with pytest.raises(LiverUNetError):
        write_image(oblique_volume(np.float32), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.nrrd"]


def test_dicom_folder_without_series(tmp_path):
    (tmp_path / "notes.txt").write_text("no dicom here")
    with pytest.raises(LiverUNetError, match="No DICOM series"):
        read_image(tmp_path)


def write_dicom_series(folder, array: np.ndarray, spacing=(0.8, 0.8, 2.5), uid="1.2.3.4.5"):
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        sl = sitk.GetImageFromArray(array[k].astype(np.int16))
        sl.SetSpacing(spacing[:2])
        for key, value in {
            "0008|0060": "CT",
            "0020|000d": "1.2.3",
            "0020|000e": uid,
            "0020|0032": f"-100\\-120\\{k * spacing[2]}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": str(spacing[2]),
            "0020|0013": str(k + 1),
            "0008|0018": f"{uid}.{k + 1}",
        }.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_folder_picks_the_largest_series(tmp_path):
    rng = np.random.default_rng(3)
    big = rng.integers(-1000, 1000, (6, 8, 9)).astype(np.int16)
    small = rng.integers(-1000, 1000, (3, 8, 9)).astype(np.int16)
    write_dicom_series(tmp_path / "study", big, uid="1.2.3.4.100")
    write_dicom_series(tmp_path / "study" / "_other", small, uid="1.2.3.4.200")
    # put the small series next to the big one, in the same folder
    for f in (tmp_path / "study" / "_other").iterdir():
        f.rename(tmp_path / "study" / f"other_{f.name}")
    vol = read_image(tmp_path / "study")
    assert vol.array.shape == big.shape
    np.testing.assert_array_equal(vol.array, big)
    assert vol.metadata["modality"] == "CT"
    assert vol.metadata["dicom_series_ignored"] == "1"
    np.testing.assert_allclose(vol.spacing_ijk, [0.8, 0.8, 2.5], atol=1e-6)
    np.testing.assert_allclose(vol.origin_ras, [100.0, 120.0, 0.0], atol=1e-6)


@pytest.mark.data
def test_chaos_ct_dicom_folder_matches_reference_grid(ct_sample_dir):
    ct = read_image(ct_sample_dir / "dicom")
    gt = read_image(ct_sample_dir / "liver_gt.nii.gz")
    assert ct.array.shape == gt.array.shape == (78, 512, 512)
    assert ct.array.dtype.kind == "i"  # integer HU, not float
    np.testing.assert_allclose(ct.ijk_to_ras, gt.ijk_to_ras, atol=1e-6)
    assert ct.metadata["modality"] == "CT"
    # The README's check: the liver mask sits on liver-like intensities.
    assert 100 < ct.array[gt.array > 0].mean() < 200


@pytest.mark.data
@pytest.mark.parametrize("subject", ["21", "22", "39"])
@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd", ".mha"])
def test_chaos_oblique_mri_round_trip(tmp_path, mri_image_path, subject, ending):
    vol = read_image(mri_image_path(subject))
    assert vol.array.dtype == np.int16
    off_axis = np.abs(vol.directions - np.diag(np.sign(np.diag(vol.directions)))).max()
    assert off_axis > 1e-3, "subjects 21, 22, 39 are oblique"
    write_image(vol, tmp_path / f"copy{ending}")
    back = read_image(tmp_path / f"copy{ending}")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=1e-6, rtol=0)
