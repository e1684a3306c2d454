"""Fault suite, reading images: what a cut, corrupt or impossible file gets.

A file that cannot hold the image its header describes is refused with one clear message; it is
never read with the missing voxels as zeros.
"""

from __future__ import annotations

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
