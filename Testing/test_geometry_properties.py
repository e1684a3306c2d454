"""Property tests: random oblique, anisotropic grids survive every file format exactly, and our
IJK-to-RAS agrees with SimpleITK's TransformIndexToPhysicalPoint after LPS -> RAS."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from LiverUNetLib.image_io import read_image, volume_to_sitk, write_image
from LiverUNetLib.segmentation_file import liver_segment_info, read_segmentation, write_segmentation
from LiverUNetLib.volume import LPS_TO_RAS, Volume

# Relative geometry tolerance per format: NIfTI keeps the affine in float32, the others in doubles.
TOLERANCE = {".nii.gz": 2e-6, ".nrrd": 1e-12, ".mha": 1e-12, ".seg.nrrd": 1e-12}

SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def rotation(q: tuple[float, float, float, float]) -> np.ndarray:
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


quaternions = st.tuples(*[st.floats(-1, 1) for _ in range(4)]).filter(
    lambda q: np.linalg.norm(q) > 0.2
)
spacings = st.tuples(*[st.floats(0.2, 8.0) for _ in range(3)])
origins = st.tuples(*[st.floats(-500.0, 500.0) for _ in range(3)])
shapes = st.tuples(st.integers(2, 6), st.integers(2, 7), st.integers(2, 8))


@st.composite
def volumes(draw) -> Volume:
    matrix = np.eye(4)
    r = rotation(draw(quaternions))
    if draw(st.booleans()):
        r[:, 0] = -r[:, 0]  # left-handed grids exist too (flipped axes)
    matrix[:3, :3] = r @ np.diag(draw(spacings))
    matrix[:3, 3] = draw(origins)
    shape = draw(shapes)
    seed = draw(st.integers(0, 2**16))
    labels = np.random.default_rng(seed).integers(0, 2, size=shape).astype(np.uint8)
    return Volume(labels, matrix)


def assert_same_geometry(a: Volume, b: Volume, rel: float) -> None:
    scale = max(1.0, float(np.abs(a.ijk_to_ras).max()))
    np.testing.assert_allclose(b.ijk_to_ras, a.ijk_to_ras, atol=rel * scale, rtol=0)


@SETTINGS
@given(vol=volumes())
def test_round_trip_every_format(vol):
    with tempfile.TemporaryDirectory() as tmp:
        for ending in (".nii.gz", ".nrrd", ".mha"):
            path = Path(tmp) / f"v{ending}"
            write_image(vol, path)
            back = read_image(path)
            np.testing.assert_array_equal(back.array, vol.array)
            assert_same_geometry(vol, back, TOLERANCE[ending])
        path = Path(tmp) / "v.seg.nrrd"
        write_segmentation(vol, path, [liver_segment_info()])
        back, _ = read_segmentation(path)
        np.testing.assert_array_equal(back.array, vol.array)
        assert_same_geometry(vol, back, TOLERANCE[".seg.nrrd"])


@SETTINGS
@given(vol=volumes(), data=st.data())
def test_index_to_physical_matches_simpleitk(vol, data):
    image = volume_to_sitk(vol)
    k, j, i = (data.draw(st.integers(0, n - 1)) for n in vol.array.shape)
    lps = np.array(image.TransformIndexToPhysicalPoint((i, j, k)))
    ras = (LPS_TO_RAS[:3, :3] @ lps)
    ours = (vol.ijk_to_ras @ [i, j, k, 1])[:3]
    np.testing.assert_allclose(ours, ras, atol=1e-9 * max(1.0, np.abs(ras).max()))
    # and the voxel value SimpleITK sees at that index is the one in our KJI array
    assert image.GetPixel(i, j, k) == vol.array[k, j, i]


@SETTINGS
@given(vol=volumes())
def test_reading_back_agrees_with_simpleitk_on_disk(vol):
    """Write with SimpleITK directly (not our writer), read with ours: same physical points."""
    with tempfile.TemporaryDirectory() as tmp:
        image = sitk.GetImageFromArray(vol.array)
        spacing, origin, direction = vol.lps_geometry()
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection(direction)
        path = str(Path(tmp) / "v.nrrd")
        sitk.WriteImage(image, path)
        ours = read_image(path)
        corner = np.array(vol.array.shape[::-1]) - 1
        lps = np.array(image.TransformIndexToPhysicalPoint(tuple(int(c) for c in corner)))
        np.testing.assert_allclose(
            (ours.ijk_to_ras @ np.r_[corner, 1])[:3], LPS_TO_RAS[:3, :3] @ lps, atol=1e-9 * max(1, np.abs(lps).max())
        )
