""".seg.nrrd: names, colours, terminology, exact geometry, layers, cropped files, label reading."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import SimpleITK as sitk

from LiverUNetLib import image_io
from LiverUNetLib.errors import LiverUNetError
from LiverUNetLib.image_io import write_image
from LiverUNetLib.segmentation_file import (
    LIVER_COLOR,
    LIVER_TERMINOLOGY,
    SegmentInfo,
    liver_segment_info,
    read_label_volume,
    read_segment_mask,
    read_segmentation,
    write_segmentation,
)
from LiverUNetLib.volume import Volume


def oblique_labelmap() -> Volume:
    c, s = np.cos(0.4), np.sin(0.4)
    matrix = np.eye(4)
    matrix[:3, :3] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ np.diag([0.9, 1.2, 5.0])
    matrix[:3, 3] = [5.5, -70.25, 12.0]
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1:4, 2:5, 3:6] = 1
    labels[5, 0, 0:2] = 2
    return Volume(labels, matrix)


def physical(volume: Volume, mask: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask)[:, ::-1]
    return (volume.ijk_to_ras @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]


def test_round_trip_keeps_everything(tmp_path):
    vol = oblique_labelmap()
    segments = [liver_segment_info(), SegmentInfo("Not liver", (0.1, 0.2, 0.3), 2, segment_id="bg")]
    path = write_segmentation(vol, tmp_path / "s.seg.nrrd", segments)
    back, infos = read_segmentation(path)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=1e-12)
    assert [(s.name, s.label_value, s.segment_id) for s in infos] == [
        ("Liver", 1, "Liver"),
        ("Not liver", 2, "bg"),
    ]
    assert infos[0].terminology == LIVER_TERMINOLOGY
    assert infos[0].color == pytest.approx(LIVER_COLOR)
    assert infos[1].color == pytest.approx((0.1, 0.2, 0.3))
    assert [p.name for p in tmp_path.iterdir()] == ["s.seg.nrrd"]


def test_file_is_lps_as_slicer_writes_it(tmp_path):
    import nrrd

    vol = oblique_labelmap()
    write_segmentation(vol, tmp_path / "s.seg.nrrd", [liver_segment_info(), SegmentInfo("b", (0, 0, 1), 2)])
    header = nrrd.read_header(str(tmp_path / "s.seg.nrrd"))
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(header["space origin"], vol.ijk_to_lps[:3, 3])
    assert header["Segment0_Name"] == "Liver"
    assert "TerminologyEntry:" + LIVER_TERMINOLOGY in header["Segment0_Tags"]


def test_orphan_label_values_are_refused(tmp_path):
    with pytest.raises(LiverUNetError, match="no segment describes"):
        write_segmentation(oblique_labelmap(), tmp_path / "s.seg.nrrd", [liver_segment_info()])
    assert list(tmp_path.iterdir()) == []


def test_disk_full_leaves_no_partial_file(tmp_path, monkeypatch):
    import slicerio

    real = slicerio.write_segmentation

    def partial_then_full(name, *args, **kwargs):
        real(name, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(slicerio, "write_segmentation", partial_then_full)
    vol = oblique_labelmap()
    vol.array[vol.array == 2] = 0
    with pytest.raises(LiverUNetError, match="disk is full"):
        write_segmentation(vol, tmp_path / "s.seg.nrrd", [liver_segment_info()])
    assert list(tmp_path.iterdir()) == []


def test_overlapping_layers(tmp_path):
    """A Slicer file with overlapping segments (two layers, both label value 1)."""
    import slicerio

    vol = oblique_labelmap()
    a = np.zeros(vol.array.shape, bool)
    a[0:3, 0:3, 0:3] = True
    b = np.zeros(vol.array.shape, bool)
    b[2:5, 2:5, 2:5] = True  # overlaps a at [2, 2, 2]
    seg = slicerio.create_segmentation(a.shape[::-1], vol.ijk_to_lps)
    slicerio.add_segment(seg, a.transpose(2, 1, 0), {"id": "a", "name": "Liver", "color": [1, 0, 0]})
    slicerio.add_segment(seg, b.transpose(2, 1, 0), {"id": "b", "name": "Tumour", "color": [0, 1, 0]})
    assert seg["voxels"].ndim == 4
    path = tmp_path / "layers.seg.nrrd"
    slicerio.write_segmentation(str(path), seg)

    labelmap, infos = read_segmentation(path)
    assert [(s.name, s.label_value) for s in infos] == [("Liver", 1), ("Tumour", 2)]
    assert labelmap.metadata["relabelled"] == "1"
    assert labelmap.array[2, 2, 2] == 2  # later segment wins in the merged labelmap
    np.testing.assert_allclose(labelmap.ijk_to_ras, vol.ijk_to_ras, atol=1e-12)
    # ... but each segment's own mask is exact
    np.testing.assert_array_equal(read_segment_mask(path, "Liver").array, a.astype(np.uint8))
    np.testing.assert_array_equal(read_segment_mask(path, "tumour").array, b.astype(np.uint8))


def test_read_label_volume_picks_liver(tmp_path):
    vol = oblique_labelmap()
    segments = [SegmentInfo("Kidney", (0, 0, 1), 2), SegmentInfo("LIVER", (1, 0, 0), 1)]
    write_segmentation(vol, tmp_path / "s.seg.nrrd", segments)
    mask = read_label_volume(tmp_path / "s.seg.nrrd")
    np.testing.assert_array_equal(mask.array, (vol.array == 1).astype(np.uint8))
    assert mask.metadata["segment"] == "LIVER"
    by_value = read_label_volume(tmp_path / "s.seg.nrrd", label_value=2)
    np.testing.assert_array_equal(by_value.array, (vol.array == 2).astype(np.uint8))


def test_read_label_volume_only_segment_and_ambiguous(tmp_path):
    vol = oblique_labelmap()
    only = vol.with_array((vol.array == 1).astype(np.uint8))
    write_segmentation(only, tmp_path / "one.seg.nrrd", [SegmentInfo("Organ", (1, 0, 0), 1)])
    with pytest.raises(LiverUNetError, match=r"no segment named 'Liver'; its segments are \['Organ'\]"):
        read_label_volume(tmp_path / "one.seg.nrrd")  # a lone segment is not taken as the liver
    assert read_label_volume(tmp_path / "one.seg.nrrd", segment_name="Organ").array.sum() == 27
    write_segmentation(vol, tmp_path / "two.seg.nrrd", [SegmentInfo("A", (1, 0, 0), 1), SegmentInfo("B", (0, 1, 0), 2)])
    with pytest.raises(LiverUNetError, match=r"\['A', 'B'\]"):
        read_label_volume(tmp_path / "two.seg.nrrd")
    with pytest.raises(LiverUNetError, match="no segment named"):
        read_label_volume(tmp_path / "two.seg.nrrd", segment_name="Spleen")


def test_read_label_volume_from_label_image(tmp_path):
    vol = oblique_labelmap()
    write_image(vol, tmp_path / "labels.nii.gz")
    with pytest.raises(LiverUNetError, match=r"several non-zero values \[1, 2\]"):
        read_label_volume(tmp_path / "labels.nii.gz")  # which value is the liver is never guessed
    liver = read_label_volume(tmp_path / "labels.nii.gz", label_value=1)
    assert liver.array.dtype == np.uint8 and set(np.unique(liver.array)) == {0, 1}
    assert liver.array.sum() == 27


def test_cropped_segmentation_is_placed_on_the_image_grid(tmp_path):
    """Slicer may save a segmentation cropped to its content, with a shifted origin."""
    vol = oblique_labelmap()
    liver = (vol.array == 1).astype(np.uint8)
    crop = liver[1:5, 1:6, 2:7]
    shifted = vol.ijk_to_ras.copy()
    shifted[:3, 3] = (vol.ijk_to_ras @ [2, 1, 1, 1])[:3]  # voxel (i=2, j=1, k=1)
    write_segmentation(Volume(crop, shifted), tmp_path / "crop.seg.nrrd", [liver_segment_info()])
    placed = read_label_volume(tmp_path / "crop.seg.nrrd", reference=vol)
    np.testing.assert_array_equal(placed.array, liver)
    np.testing.assert_allclose(placed.ijk_to_ras, vol.ijk_to_ras)


def test_label_on_another_grid_is_refused(tmp_path):
    vol = oblique_labelmap()
    other = Volume((vol.array == 1).astype(np.uint8), vol.ijk_to_ras @ np.diag([1.0, 1.0, 0.5, 1.0]))
    write_segmentation(other, tmp_path / "other.seg.nrrd", [liver_segment_info()])
    with pytest.raises(LiverUNetError, match="differs from the image's grid"):
        read_label_volume(tmp_path / "other.seg.nrrd", reference=vol)


def test_corrupt_and_missing(tmp_path):
    bad = tmp_path / "bad.seg.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: what\n\n\x00\x01")
    with pytest.raises(LiverUNetError, match="corrupt"):
        read_segmentation(bad)
    with pytest.raises(LiverUNetError, match="not found"):
        read_segmentation(tmp_path / "none.seg.nrrd")


def test_plain_nrrd_labelmap_reads_as_segments(tmp_path):
    vol = oblique_labelmap()
    image = sitk.GetImageFromArray(vol.array)
    spacing, origin, direction = vol.lps_geometry()
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(tmp_path / "plain.seg.nrrd"))
    labelmap, infos = read_segmentation(tmp_path / "plain.seg.nrrd")
    assert [s.label_value for s in infos] == [1, 2]
    np.testing.assert_array_equal(labelmap.array, vol.array)
    np.testing.assert_allclose(labelmap.ijk_to_ras, vol.ijk_to_ras, atol=1e-9)


# --- interoperability with real Slicer MRML (slicer-core) ---------------------------------------
def _slicer():
    return pytest.importorskip("slicer", reason="slicer-core not installed (pip install slicer-core)")


def _segment_points(segment, label_value):
    import vtk
    from vtk.util import numpy_support

    image = segment.GetRepresentation("Binary labelmap")
    ext = image.GetExtent()
    shape = (ext[5] - ext[4] + 1, ext[3] - ext[2] + 1, ext[1] - ext[0] + 1)
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    matrix = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    ijk = np.argwhere(array == label_value)[:, ::-1] + np.array([ext[0], ext[2], ext[4]])
    return (matrix @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]


@pytest.mark.slicer
def test_slicer_reads_our_file(tmp_path):
    slicer = _slicer()
    import vtk

    vol = oblique_labelmap()
    write_segmentation(vol, tmp_path / "s.seg.nrrd", [liver_segment_info(), SegmentInfo("Other", (0, 0, 1), 2)])
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "s.seg.nrrd"))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    liver = segmentation.GetSegment("Liver")
    assert liver.GetName() == "Liver"
    assert liver.GetColor() == pytest.approx(LIVER_COLOR)
    tag = vtk.mutable("")
    assert liver.GetTag("TerminologyEntry", tag) and str(tag) == LIVER_TERMINOLOGY
    points = _segment_points(liver, liver.GetLabelValue())
    expected = physical(vol, vol.array == 1)
    np.testing.assert_allclose(np.sort(points, axis=0), np.sort(expected, axis=0), atol=1e-9)


@pytest.mark.slicer
def test_we_read_slicer_cropped_file(tmp_path):
    slicer = _slicer()
    vol = oblique_labelmap()
    write_segmentation(vol, tmp_path / "s.seg.nrrd", [liver_segment_info(), SegmentInfo("Other", (0, 0, 1), 2)])
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    reader = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(tmp_path / "s.seg.nrrd"))
    assert reader.ReadData(node)
    writer = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    writer.SetCropToMinimumExtent(True)
    writer.SetFileName(str(tmp_path / "slicer.seg.nrrd"))
    assert writer.WriteData(node)

    labelmap, infos = read_segmentation(tmp_path / "slicer.seg.nrrd")
    assert labelmap.metadata["reference_extent_offset"] != "0 0 0"  # really cropped
    assert labelmap.array.shape != vol.array.shape
    assert infos[0].terminology == LIVER_TERMINOLOGY
    for value in (1, 2):
        np.testing.assert_allclose(
            np.sort(physical(labelmap, labelmap.array == value), axis=0),
            np.sort(physical(vol, vol.array == value), axis=0),
            atol=1e-9,
        )
    placed = read_label_volume(tmp_path / "slicer.seg.nrrd", reference=vol)
    np.testing.assert_array_equal(placed.array, (vol.array == 1).astype(np.uint8))


@pytest.mark.data
@pytest.mark.parametrize("subject", ["21", "22", "39"])
def test_chaos_label_seg_nrrd_round_trip(tmp_path, mri_label_path, subject):
    labels = image_io.read_image(mri_label_path(subject))
    names = ["Liver", "Right kidney", "Left kidney", "Spleen"]
    segments = [SegmentInfo(n, (0.2 * v, 0.5, 0.5), v) for v, n in enumerate(names, start=1)]
    segments[0] = liver_segment_info()
    write_segmentation(labels, tmp_path / "l.seg.nrrd", segments)
    back, infos = read_segmentation(tmp_path / "l.seg.nrrd")
    np.testing.assert_array_equal(back.array, labels.array)
    np.testing.assert_allclose(back.ijk_to_ras, labels.ijk_to_ras, atol=1e-9, rtol=0)
    assert [s.name for s in infos] == names
    liver = read_label_volume(tmp_path / "l.seg.nrrd", reference=labels)
    np.testing.assert_array_equal(liver.array, (labels.array == 1).astype(np.uint8))
