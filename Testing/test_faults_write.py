"""Fault suite, writing: what a full disk or a silently failing writer gets.

Every output is staged next to its destination, read back and only then renamed, so an existing
file is never replaced by an empty or cut one, whatever the format.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LiverUNetLib import image_io
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.image_io import read_image, write_image
from LiverUNetLib.segmentation_file import write_liver_mask
from LiverUNetLib.volume import Volume

IMAGE_ENDINGS = [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"]


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 64 KiB tmpfs, so a write of a few hundred KiB runs out of space."""
    folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small disk to fill")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def _noise(shape=(40, 64, 64)) -> Volume:
    """Random int16 voxels: they do not compress, so they cannot fit on the small disk."""
    rng = np.random.default_rng(0)
    return Volume(rng.integers(0, 30000, shape).astype(np.int16), np.diag([0.8, 0.8, 3.0, 1.0]))


def _noise_mask(shape=(80, 128, 128)) -> Volume:
    rng = np.random.default_rng(1)
    return Volume((rng.random(shape) > 0.5).astype(np.uint8), np.diag([0.8, 0.8, 3.0, 1.0]))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("ending", IMAGE_ENDINGS)
def test_disk_full_keeps_the_old_image(small_disk, ending):
    target = small_disk / f"out{ending}"
    write_image(Volume(np.ones((4, 4, 4), np.int16)), target)
    before = _files(small_disk)
    with pytest.raises(LiverUNetError, match="Could not write"):
        write_image(_noise(), target)
    assert _files(small_disk) == before


def test_disk_full_keeps_the_old_segmentation(small_disk):
    target = small_disk / "out.seg.nrrd"
    write_liver_mask(Volume(np.ones((4, 4, 4), np.uint8)), target)
    before = _files(small_disk)
    with pytest.raises(LiverUNetError, match="Could not write"):
        write_liver_mask(_noise_mask(), target)
    assert _files(small_disk) == before


def _cut_writer(real):
    """A writer that stops half way and returns normally, as ITK's NIfTI writer does on a full disk."""

    def write(image, name, *args, **kwargs):
        real(image, name, *args, **kwargs)
        data = Path(name).read_bytes()
        Path(name).write_bytes(data[: len(data) // 2])

    return write


@pytest.mark.parametrize("ending", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_silently_cut_write_keeps_the_old_file(tmp_path, monkeypatch, ending):
    target = tmp_path / f"out{ending}"
    write_image(Volume(np.ones((4, 4, 4), np.int16)), target)
    before = _files(tmp_path)
    monkeypatch.setattr(image_io.sitk, "WriteImage", _cut_writer(sitk.WriteImage))
    with pytest.raises(LiverUNetError, match="Could not write"):
        write_image(_noise(), target)
    assert _files(tmp_path) == before


def test_silently_empty_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.nii.gz"
    write_image(Volume(np.ones((4, 4, 4), np.int16)), target)
    before = _files(tmp_path)
    monkeypatch.setattr(image_io.sitk, "WriteImage", lambda image, name, *a: Path(name).write_bytes(b""))
    with pytest.raises(LiverUNetError, match="empty"):
        write_image(_noise(), target)
    assert _files(tmp_path) == before


def test_write_of_the_wrong_grid_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "out.nrrd"
    real = sitk.WriteImage
    monkeypatch.setattr(
        image_io.sitk, "WriteImage", lambda image, name, *a: real(image[:, :, :2], name, *a)
    )
    with pytest.raises(LiverUNetError, match="size"):
        write_image(_noise((5, 6, 7)), target)
    assert list(tmp_path.iterdir()) == []


def test_verified_write_reads_back_the_same_voxels(tmp_path):
    volume = _noise((5, 6, 7))
    for ending in IMAGE_ENDINGS:
        np.testing.assert_array_equal(read_image(write_image(volume, tmp_path / f"v{ending}")).array, volume.array)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
